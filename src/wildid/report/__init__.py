"""Reports a person would rather look at than read, and runs compared side by side.

`write_report(layout)` writes `working/<run>/report/index.html` (self-contained: the
pictures are embedded), figures.json and the PNGs; `wildid run` ends with it and
`wildid report RUN [--reference RUN]` rewrites it. `compare_runs` lines up several runs'
figures and the settings that differ (`wildid compare RUN...`). The modules, in the
order a report is made: collect (read the run folder), figures (the numbers),
embedding_map (UMAP), pictures and galleries (the plots), page (HTML), build (all of
them); compare stands beside them.
"""

from wildid.report.build import Report, write_report
from wildid.report.compare import Comparison, compare_runs

__all__ = ["Comparison", "Report", "compare_runs", "write_report"]
