"""The stages chained: `stages` (prepare, detect, crop, train, embed, run), `evaluate`
(threshold, predict, submission, scores), `ensemble` (runs and folds combined) and
`pseudo` (confident test predictions as train images); `report` writes the run's report
(wildid.report) last.

`from wildid import pipeline` gives the stage functions the CLI and notebooks call.
"""

from wildid.pipeline.evaluate import Evaluation, evaluate, evaluate_folds, evaluate_rankings
from wildid.pipeline.stages import (
    RunResult,
    crop,
    detect,
    embed,
    fold_ids,
    prepare,
    report,
    run,
    run_baseline,
    train,
    train_data,
)

__all__ = [
    "Evaluation",
    "RunResult",
    "crop",
    "detect",
    "embed",
    "evaluate",
    "evaluate_folds",
    "evaluate_rankings",
    "fold_ids",
    "prepare",
    "report",
    "run",
    "run_baseline",
    "train",
    "train_data",
]
