"""`wildid serve` in a real headless Chromium, and the app's limits.

The browser test starts `wildid serve PACKAGE --port N` as its own process (the command a
biologist runs, binding 127.0.0.1 by default) on a private unpacking of the session's tiny
package, and drives Debian's /usr/bin/chromium through /usr/bin/chromedriver with selenium:
upload a test photo, wait for five candidates whose pictures have loaded, confirm the third
one, and check that identifying the same photo (Identifier API, in this process, reading
the catalogue the server wrote) returns that individual at rank 1. scripts/setup_env.sh
installs chromium and chromium-driver where apt can; without them the test is skipped
(the `browser` fixture, tests/conftest.py, shared with the report's browser test).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wildid.gallery import app

START_TIMEOUT = 240  # s: importing torch and gradio and loading the model on 2 busy cores
STEP_TIMEOUT = 120  # s: one browser step (an identify embeds the photo on CPU)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    port: int
    root: Path
    log: Path


@pytest.fixture(scope="module")
def server(built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`wildid serve` on a private copy of the tiny package, until the module's tests end."""
    from wildid.gallery.package import open_package

    out = tmp_path_factory.mktemp("serve")
    archive = Path(shutil.copy(built.archive, out / "tiny.zip"))
    root = Path(open_package(archive).root)
    port = _free_port()
    log = out / "serve.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wildid.cli", "serve", str(root), "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"wildid serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"wildid serve not up after {START_TIMEOUT} s:\n{log.read_text()}")
            time.sleep(0.5)
        yield Server(url, port, root, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _loaded(driver, css: str) -> bool:
    """Whether the first element matching `css` is an <img> whose picture has loaded."""
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, css)
    return bool(found) and driver.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth > 0", found[0]
    )


def _uploaded(driver, name: str) -> bool:
    """Whether the upload box lists `name` as uploaded. While uploading it shows "Uploading 1
    file... NAME"; once done, the name's stem and suffix on lines of their own ("STEM\n.jpg"),
    so the test joins the lines, and waits for the upload to end before pressing Identify."""
    from selenium.webdriver.common.by import By

    text = driver.find_element(By.ID, "upload").text
    return "Uploading" not in text and name in "".join(text.split())


def test_browser_upload_review_confirm_then_rank_one(server: Server, browser, built) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from wildid.gallery.identify import Identifier
    from wildid.gallery.package import open_package

    photo = built.test_photos()[0]
    wait = WebDriverWait(browser, STEP_TIMEOUT)
    browser.get(server.url)
    upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#upload input[type=file]"))
    upload.send_keys(str(photo))
    wait.until(lambda d: _uploaded(d, photo.name))
    browser.find_element(By.ID, "identify").click()

    wait.until(lambda d: all(_loaded(d, f"#candidate-{i}-photo img") for i in range(1, 6)))
    assert _loaded(browser, "#crops img"), "the crop the model saw is not shown"
    infos = [browser.find_element(By.ID, f"candidate-{i}-info").text for i in range(1, 6)]
    assert all("score" in text and "probability" in text for text in infos), infos
    assert "decision is yours" in browser.find_element(By.ID, "status").text

    chosen_button = browser.find_element(By.ID, "confirm-3")
    chosen = chosen_button.text.removeprefix("Confirm: ").strip()
    assert chosen and chosen in infos[2]
    chosen_button.click()
    wait.until(lambda d: "Enrolled 1 photo" in d.find_element(By.ID, "status").text)
    assert chosen in browser.find_element(By.ID, "status").text

    result = Identifier(open_package(server.root)).identify([photo])[0]
    assert result.candidates[0].individual_id == chosen

    browser.find_element(By.ID, "tab-catalogue-button").click()
    wait.until(lambda d: chosen in d.find_element(By.ID, "catalogue-table").text)


def test_binds_loopback_refuses_big_uploads_and_files_outside_thumbnails(server: Server) -> None:
    listening = Path("/proc/net/tcp")
    if listening.exists():
        port = f"{server.port:04X}"
        binds = [
            line.split()[1]
            for line in listening.read_text().splitlines()[1:]
            if line.split()[1].endswith(":" + port) and line.split()[3] == "0A"
        ]
        assert binds == [f"0100007F:{port}"], binds  # 127.0.0.1 only

    def status(path: Path) -> int:
        try:
            with urllib.request.urlopen(f"{server.url}gradio_api/file={path}") as response:
                return response.status
        except urllib.error.HTTPError as err:
            return err.code

    import httpx

    big = httpx.post(
        f"{server.url}gradio_api/upload",
        files={"files": ("big.jpg", b"\xff" * (app.MAX_UPLOAD_BYTES + 1), "image/jpeg")},
        timeout=60,
    )
    assert big.status_code == 413, big.text

    thumb = next((server.root / "gallery" / "thumbs").iterdir())
    assert status(thumb) == 200
    for secret in (Path("/etc/passwd"), server.root / "model.safetensors", server.log):
        assert status(secret) == 403, secret


def test_uploads_are_limited_in_type_content_and_count(tmp_path: Path) -> None:
    import gradio as gr

    good = tmp_path / "a.jpg"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    assert app.check_uploads([good]) == [good]
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    gif = tmp_path / "b.jpg"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(gif, format="GIF")
    fake = tmp_path / "c.png"
    fake.write_bytes(b"not an image")
    for bad in ([], [text], [gif], [fake], [good] * (app.MAX_PHOTOS + 1)):
        with pytest.raises(gr.Error):
            app.check_uploads(bad)


def test_sighting_new_individual_skip_and_export(package, built, tmp_path: Path) -> None:
    """The handlers behind the buttons, without a browser: one encounter of two photos
    declared a new individual, a skip that enrolls nothing, and the export zip."""
    import zipfile

    import gradio as gr

    from wildid.gallery.identify import Identifier

    identifier = Identifier(package)
    handlers = app._App(identifier, identifier.catalogue, tmp_path)
    photos = [str(p) for p in built.test_photos()[:3]]

    queue, status, *_ = handlers.identify(photos[:2], sighting=True)
    assert len(queue.items) == 1 and len(queue.items[0].photos) == 2
    assert "encounter 1 of 1" in status
    with pytest.raises(gr.Error):
        handlers.new(queue, "   ")
    queue, status, *rest = handlers.new(queue, "NEW-1")
    assert "Enrolled 2 photos as **NEW-1**" in status and not queue.items
    table = rest[-1]
    assert int(table.set_index("individual_id").loc["NEW-1", "photos"]) == 2

    before = len(identifier.catalogue.records())
    queue, *_ = handlers.identify(photos[2:], sighting=False)
    queue, status, *_ = handlers.skip(queue)
    assert status.startswith("Skipped") and len(identifier.catalogue.records()) == before
    with pytest.raises(gr.Error):
        handlers.skip(queue)

    with zipfile.ZipFile(handlers.export()) as archive:
        names = archive.namelist()
    assert "catalogue.csv" in names
    assert sum(n.startswith("NEW-1/") and not n.endswith("/") for n in names) == 2
