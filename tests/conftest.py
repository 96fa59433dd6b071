"""Shared fixtures: one tiny synthetic competition per test session, fast configs, and a
headless Chromium.

The competition is generated once (20 individuals, 96 px photos: about a second) and
shared read-only; a test that changes files copies it first (`tiny_copy`). `browser` is
Debian's chromium driven through chromedriver with selenium (the review app's and the
report's browser tests); without them installed it skips, saying why.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import wildid  # noqa: F401  (offline switches before any third-party import)
from wildid.config import Config, load_config
from wildid.synth.render import SynthSpec, synthesize

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "configs" / "mini.yaml"
TINY_SPEC = SynthSpec(individuals=20, size=96, seed=0)
# One epoch at 64 px without the baseline: every stage runs, in seconds. No loader
# workers: starting one costs more than it saves on a hundred small crops.
FAST = [
    "train.epochs=1",
    "train.image_size=64",
    "baseline=false",
    "train.num_workers=0",
    "embed.flip_tta=false",
]


@pytest.fixture(scope="session")
def tiny_comp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic competition folder (with solution.csv and boxes.csv). Do not modify."""
    root = tmp_path_factory.mktemp("synth") / "comp"
    synthesize(root, TINY_SPEC, progress=False)
    return root


@pytest.fixture
def tiny_copy(tiny_comp: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny competition that a test may edit."""
    return Path(shutil.copytree(tiny_comp, tmp_path / "comp"))


@pytest.fixture(scope="session")
def make_config(tiny_comp: Path) -> Callable[..., Config]:
    """make_config(out_dir, *overrides): mini.yaml on the tiny competition, fast settings,
    outputs (working/, submissions/) under out_dir."""

    def make(out: Path, *overrides: str) -> Config:
        return load_config(
            MINI,
            [
                f"data={tiny_comp}",
                f"working={out / 'working'}",
                f"submissions={out / 'submissions'}",
                *FAST,
                *overrides,
            ],
        )

    return make


@pytest.fixture
def tiny_config(make_config: Callable[..., Config], tmp_path: Path) -> Callable[..., Config]:
    """tiny_config(*overrides): `make_config` with outputs under this test's tmp_path."""
    return lambda *overrides: make_config(tmp_path, *overrides)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator:
    """A headless Chromium (selenium WebDriver) with an empty profile of its own."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "chromium and chromedriver are not installed (scripts/setup_env.sh installs "
            "Debian's chromium and chromium-driver with apt-get where apt is usable)"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
