"""One base class for every error a user can cause or fix.

A `WildidError` means the input, config, weights, data or environment is wrong, not the
code: the command line prints its message as one line and exits with status 2 (see
`wildid.cli`). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class WildidError(Exception):
    """A problem the user can fix; the message names the file, key or row and what to do."""


class RunConflictError(WildidError, ValueError):
    """A run folder holds outputs made with other settings or other data."""


class RunNotFoundError(WildidError, FileNotFoundError):
    """A run named on the command line has no folder (or no saved config) to read."""


class TrainingDivergedError(WildidError, RuntimeError):
    """Training met non-finite gradients in every step of an epoch: it cannot go on."""
