"""Kaggle: run wildid as Kaggle notebooks, and talk to Kaggle through its official CLI.

- `api`: credentials (environment, or a private kaggle.json), the preflight every upload
  passes (CLI present, credentials, network), `submit`, `push_kernel`, `upload_dataset`.
- `metadata`: the kernel and dataset metadata files, which kernel reads which
  (`KERNEL_INPUTS`), and their validation by the official `kaggle` package's own checks.
- `bundle`: a folder Kaggle takes as is: the code dataset (wildid's wheel and the wheels
  of what Kaggle's image lacks) and one kernel folder per notebook.
- `push`: uploads a bundle: datasets first (created or versioned), then the kernels in
  order, each waiting for the outputs it reads.
- `weights`: a Kaggle dataset folder from a trained run's checkpoints; `imagenet`: one of
  timm ImageNet weights from a local Hugging Face cache, for offline kernels.

Only `api` is imported here (the CLI's `submit` and the tests use its names); the other
modules are imported where they are used.
"""

from wildid.kaggle.api import (
    COMPETITION,
    KAGGLE_HOST,
    Credentials,
    KaggleError,
    check_network,
    check_submission,
    credentials_path,
    find_cli,
    load_credentials,
    preflight,
    push_kernel,
    submit,
    upload_dataset,
)

__all__ = [
    "COMPETITION",
    "KAGGLE_HOST",
    "Credentials",
    "KaggleError",
    "check_network",
    "check_submission",
    "credentials_path",
    "find_cli",
    "load_credentials",
    "preflight",
    "push_kernel",
    "submit",
    "upload_dataset",
]
