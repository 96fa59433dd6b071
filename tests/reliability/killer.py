"""`python killer.py STAGE CLI-ARGS...`: the wildid command line, SIGKILLed inside a stage.

The process dies at the worst moment of an atomic write: the temporary is complete but not
yet moved onto its target (os.replace is where it dies), in the `nth` call of the stage's
writing function. Nothing is caught or flushed: this is `kill -9`.
"""

from __future__ import annotations

import functools
import os
import signal
import sys

import wildid.crop.boxes
import wildid.evaluation.submission
import wildid.infer.embed
import wildid.train.engine
from wildid.cli import app

# stage -> (module, function, which call dies)
POINTS = {
    "crop": (wildid.crop.boxes, "_crop_one", 10),  # the 10th photo's crop
    "train": (wildid.train.engine.Trainer, "save", 2),  # best.pt, after last.pt
    "embed": (wildid.infer.embed, "save_array", 2),  # train embedded, test not yet
    "evaluate": (wildid.evaluation.submission, "write_csv", 1),  # the submission itself
}


def _die(*_: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(stage: str) -> None:
    owner, name, nth = POINTS[stage]
    real = getattr(owner, name)
    calls = 0

    @functools.wraps(real)
    def wrapper(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == nth:
            os.replace = _die  # the write completes its temporary, then the process dies
        return real(*args, **kwargs)

    setattr(owner, name, wrapper)


if __name__ == "__main__":
    arm(sys.argv[1])
    app(sys.argv[2:], prog_name="wildid")
