"""Talk to Kaggle through its official CLI: submit, push a notebook, upload a dataset.

Every command checks, before doing anything, that it can succeed: the `kaggle` CLI is
installed, credentials exist (and `kaggle.json` is private), the network reaches Kaggle,
and (for a submission) the file is valid. A failed check raises KaggleError with what to
do; nothing is uploaded half-checked. The API key is never printed or logged: it stays
in the file the CLI reads, or in the environment passed to it.

Credentials: KAGGLE_USERNAME and KAGGLE_KEY in the environment, else
`$KAGGLE_CONFIG_DIR/kaggle.json` (default `~/.kaggle/kaggle.json`, mode 0600; see
kaggle.json.example at the repository root).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wildid.errors import WildidError
from wildid.evaluation.submission import SubmissionError, validate_submission

COMPETITION = "happy-whale-and-dolphin"
KAGGLE_HOST = ("www.kaggle.com", 443)


class KaggleError(WildidError, RuntimeError):
    """A Kaggle command cannot run; the message says why and what to do."""


@dataclass(frozen=True)
class Credentials:
    username: str
    source: str  # "environment" or the kaggle.json path
    key: str = field(repr=False)  # never shown

    def env(self) -> dict[str, str]:
        """Environment for the CLI: the caller's, plus these credentials."""
        return {**os.environ, "KAGGLE_USERNAME": self.username, "KAGGLE_KEY": self.key}


def find_cli() -> str:
    path = shutil.which("kaggle")
    if path is None:
        raise KaggleError(
            "the kaggle CLI is not installed; run `pip install kaggle` "
            "(then put your API token in ~/.kaggle/kaggle.json)."
        )
    return path


def credentials_path() -> Path:
    base = os.environ.get("KAGGLE_CONFIG_DIR")
    return (Path(base) if base else Path.home() / ".kaggle") / "kaggle.json"


def load_credentials() -> Credentials:
    """Credentials from the environment, else from a private kaggle.json."""
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if user and key:
        return Credentials(user, "environment", key)
    path = credentials_path()
    if not path.is_file():
        raise KaggleError(
            f"no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY, or save your API "
            f"token (kaggle.com > Settings > API > Create New Token) as {path} "
            "(see kaggle.json.example) and run `chmod 600` on it."
        )
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KaggleError(
            f"{path} is readable by other users (mode {mode:o}); your API key "
            f"would leak. Run: chmod 600 {path}"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Credentials(str(data["username"]), str(path), str(data["key"]))
    except (json.JSONDecodeError, KeyError, TypeError):
        raise KaggleError(
            f'{path}: expected JSON with "username" and "key" (see kaggle.json.example).'
        ) from None


def check_network(host: tuple[str, int] = KAGGLE_HOST, timeout: float = 5.0) -> None:
    try:
        with socket.create_connection(host, timeout=timeout):
            return
    except OSError as err:
        raise KaggleError(
            f"cannot reach {host[0]} ({err}); Kaggle commands need the "
            "network. On a Kaggle notebook, turn Internet on."
        ) from None


def preflight() -> tuple[str, Credentials]:
    """CLI, credentials and network, in that order; raises KaggleError at the first gap."""
    cli = find_cli()
    creds = load_credentials()
    check_network()
    return cli, creds


def _run(
    cli: str, args: Sequence[str], creds: Credentials, check: bool = True
) -> subprocess.CompletedProcess:
    """Run the CLI with the credentials in its environment; a failure (with `check`)
    raises KaggleError with the CLI's message, the key masked."""
    result = subprocess.run(
        [cli, *args], env=creds.env(), capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        message = (result.stderr or result.stdout).strip().replace(creds.key, "***")
        raise KaggleError(f"kaggle {' '.join(args[:2])} failed ({result.returncode}): {message}")
    return result


def check_submission(path: str | Path, data: str | Path | None = None) -> None:
    """Validate a submission: fully against a competition folder, else its format alone."""
    path = Path(path)
    if data is not None:
        from wildid.data.competition import load_competition
        from wildid.evaluation.submission import validate_against_competition

        validate_against_competition(path, load_competition(data, check_images=False))
        return
    import csv

    if not path.is_file():
        raise SubmissionError(f"{path}: file not found; write it with `wildid run` first.")
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = [r for r in csv.reader(handle)][1:]
    images = [r[0] for r in rows if r]
    labels = {x for r in rows if len(r) > 1 for x in r[1].split()}
    validate_submission(path, images, labels)


def submit(
    submission: str | Path,
    message: str,
    competition: str = COMPETITION,
    data: str | Path | None = None,
) -> str:
    """Validate, then `kaggle competitions submit`; returns the CLI's output."""
    try:
        check_submission(submission, data)
    except SubmissionError as err:
        raise KaggleError(f"not submitted: {err}") from None
    cli, creds = preflight()
    args = ["competitions", "submit", "-c", competition, "-f", str(submission), "-m", message]
    return _run(cli, args, creds).stdout.strip()


def _metadata(folder: Path, name: str, what: str) -> None:
    if not (folder / name).is_file():
        raise KaggleError(
            f"{folder}: no {name}; create it with `kaggle {what} init -p "
            f"{folder}` and fill in id and title."
        )


def push_kernel(folder: str | Path) -> str:
    """`kaggle kernels push` of a notebook folder (with kernel-metadata.json)."""
    folder = Path(folder)
    _metadata(folder, "kernel-metadata.json", "kernels")
    cli, creds = preflight()
    return _run(cli, ["kernels", "push", "-p", str(folder)], creds).stdout.strip()


def upload_dataset(folder: str | Path, message: str = "update", new: bool = False) -> str:
    """Upload a weights folder as a Kaggle dataset (create it, or add a version)."""
    folder = Path(folder)
    _metadata(folder, "dataset-metadata.json", "datasets")
    cli, creds = preflight()
    args = (
        ["datasets", "create", "-p", str(folder), "--dir-mode", "zip"]
        if new
        else ["datasets", "version", "-p", str(folder), "-m", message, "--dir-mode", "zip"]
    )
    return _run(cli, args, creds).stdout.strip()
