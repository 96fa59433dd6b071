"""`wildid serve`: a local web app for the biologist's loop (Gradio Blocks).

Identify tab: upload one photo, or every photo of one encounter with "same encounter"
ticked (they vote together, `Identifier.identify(..., sighting=True)`). For each query the
app shows the crop the model saw, the top `TOP_K` candidates side by side (each with its
best-matching gallery photo, the similarity and the calibrated probability of being the
same animal) and the model's `new_individual` *suggestion*; it never decides. The person
then confirms one candidate (the uploaded photos are enrolled under it), declares a new
individual (names it; the photos are enrolled under that name) or skips. Several photos
that are not one encounter are reviewed one after another.

Catalogue tab: the individuals with their photo counts and when each was last seen, and
an export (catalogue.csv plus a folder per individual, `Catalogue.export`) offered as one
zip download.

Security (the app runs on a field laptop, often beside other people's networks):

* it binds to 127.0.0.1 unless `host` is given (`wildid serve --host 0.0.0.0` to share);
* uploads: only `ALLOWED_SUFFIXES`, and the bytes must decode as JPEG or PNG; at most
  `MAX_UPLOAD_BYTES` per file (Gradio refuses larger uploads before they reach the app)
  and `MAX_PHOTOS` per request;
* the only files the browser can fetch are Gradio's own assets, this app's private upload
  and cache folder (a fresh 0700 temporary directory, removed on exit; the exports are
  written there too) and the package's thumbnail folders (`allowed_paths`); the app reads
  only the package directory and the uploads;
* no analytics (wildid sets GRADIO_ANALYTICS_ENABLED=False on import), no share link, no
  server-side rendering process, no web fonts: nothing is fetched from the internet.

Element ids (stable; tests/gallery/test_app.py drives them in a real browser): `upload`,
`sighting`, `identify`, `status`, `crops`, `candidate-{i}-photo`, `candidate-{i}-info`,
`confirm-{i}` (i = 1..TOP_K), `new-name`, `new-individual`, `skip`, `catalogue-table`,
`catalogue-refresh`, `export`, `export-file`, tabs `tab-identify` and `tab-catalogue`.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wildid  # noqa: F401  (offline switches, analytics off, before gradio is imported)

ALLOWED_SUFFIXES = (".jpg", ".jpeg", ".png")
MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # one photo; a 24-megapixel JPEG is about 12 MB
MAX_PHOTOS = 24  # photos per identify request (one encounter rarely has more)
TOP_K = 5
DEFAULT_PORT = 7860
WHO = "serve"

_FORMATS = {"JPEG", "PNG"}


@dataclass
class _Item:
    """One decision waiting for the person: the photos it enrolls and what the model said."""

    photos: list[str]
    names: list[str]
    crops: list[Any]
    candidates: list[Any]
    new_individual: bool


@dataclass
class _Queue:
    items: list[_Item] = field(default_factory=list)
    total: int = 0


def check_uploads(paths: list[str | Path]) -> list[Path]:
    """The uploaded files as paths, or gr.Error naming the first one that is refused."""
    import gradio as gr
    from PIL import Image

    if not paths:
        raise gr.Error("Upload one photo, or all photos of one encounter, first.")
    if len(paths) > MAX_PHOTOS:
        raise gr.Error(f"{len(paths)} photos: at most {MAX_PHOTOS} per request.")
    out = []
    for raw in paths:
        path = Path(raw)
        if path.suffix.lower() not in ALLOWED_SUFFIXES:
            raise gr.Error(f"{path.name}: only {', '.join(ALLOWED_SUFFIXES)} photos are accepted.")
        if path.stat().st_size > MAX_UPLOAD_BYTES:
            raise gr.Error(f"{path.name}: larger than {MAX_UPLOAD_BYTES >> 20} MB.")
        try:
            with Image.open(path) as image:
                kind = image.format
                image.verify()
        except Exception as err:  # noqa: BLE001 (any decoder failure is the same answer)
            raise gr.Error(f"{path.name}: not a readable image ({err}).") from err
        if kind not in _FORMATS:
            raise gr.Error(f"{path.name}: a {kind} file; only JPEG and PNG are accepted.")
        out.append(path)
    return out


def _fmt(value: float) -> str:
    return f"{value:.3f}"


class _App:
    """The handlers, bound to one identifier and one catalogue."""

    def __init__(self, identifier: Any, catalogue: Any, export_root: Path) -> None:
        self.identifier = identifier
        self.catalogue = catalogue
        self.export_root = export_root

    # -- identify ---------------------------------------------------------------------
    def identify(self, files: list[str] | None, sighting: bool) -> tuple:
        photos = check_uploads(list(files or []))
        results = self.identifier.identify(photos, sighting=bool(sighting), k=TOP_K)
        queue = _Queue()
        if sighting:
            first = results[0]
            queue.items.append(
                _Item(
                    [str(p) for p in photos],
                    [p.name for p in photos],
                    [r.crop for r in results],
                    list(first.candidates),
                    bool(first.new_individual),
                )
            )
        else:
            for photo, result in zip(photos, results, strict=True):
                queue.items.append(
                    _Item(
                        [str(photo)],
                        [photo.name],
                        [result.crop],
                        list(result.candidates),
                        bool(result.new_individual),
                    )
                )
        queue.total = len(queue.items)
        return (queue, *self._render(queue, ""))

    def _render(self, queue: _Queue, done: str) -> list:
        """status, crops, then per candidate (photo, info, confirm button), decision row."""
        import gradio as gr

        item = queue.items[0] if queue.items else None
        lines = [done] if done else []
        if item is None:
            if not lines:
                lines.append("Upload photos and press **Identify**.")
            out: list = ["\n\n".join(lines), gr.Gallery(value=None, visible=False)]
            for _ in range(TOP_K):
                out += [gr.Image(value=None, visible=False), gr.Markdown(visible=False)]
                out += [gr.Button(visible=False)]
            return out + [gr.update(visible=False)]
        number = queue.total - len(queue.items) + 1
        what = "encounter" if len(item.photos) > 1 else "photo"
        lines.append(f"**Reviewing {what} {number} of {queue.total}:** {', '.join(item.names)}")
        if item.new_individual:
            lines.append(
                "Suggestion: **possibly a new individual**: the best score is below the "
                "package's open-set threshold. Compare the photos; the decision is yours."
            )
        elif item.candidates:
            best = item.candidates[0]
            lines.append(
                f"Suggestion: **{best.individual_id}** is the closest known individual "
                f"(probability {_fmt(best.probability)}). Compare the photos; the decision "
                "is yours."
            )
        out = ["\n\n".join(lines), gr.Gallery(value=list(item.crops), visible=True)]
        for i in range(TOP_K):
            if i < len(item.candidates):
                c = item.candidates[i]
                info = (
                    f"**{c.rank}. {c.individual_id}**  \nscore {_fmt(c.score)} · "
                    f"probability {_fmt(c.probability)}"
                    + ("" if c.local is None else f" · keypoints {_fmt(c.local)}")
                )
                out += [
                    gr.Image(value=str(c.photo), visible=True, label=f"{c.individual_id}"),
                    gr.Markdown(value=info, visible=True),
                    gr.Button(value=f"Confirm: {c.individual_id}", visible=True),
                ]
            else:
                out += [gr.Image(value=None, visible=False), gr.Markdown(visible=False)]
                out += [gr.Button(visible=False)]
        return out + [gr.update(visible=True)]

    def _decided(self, queue: _Queue | None, enroll: dict | None) -> tuple:
        import gradio as gr

        from wildid.errors import WildidError

        if queue is None or not queue.items:
            raise gr.Error("Nothing to decide: identify photos first.")
        item = queue.items[0]
        if enroll is None:
            done = f"Skipped {', '.join(item.names)}."
        else:
            try:
                records = self.catalogue.enroll(item.photos, who=WHO, **enroll)
            except WildidError as err:
                raise gr.Error(str(err)) from err
            name = records[0].individual_id if records else "?"
            entry = records[0].entry if records else None
            done = f"Enrolled {len(records)} photo{'s' * (len(records) != 1)} as **{name}**" + (
                f" (history entry {entry}; `wildid enroll PACKAGE --undo {entry}` reverses it)."
                if entry is not None
                else "."
            )
        queue.items.pop(0)
        return (queue, *self._render(queue, done), "", self.table())

    def confirm(self, i: int):
        def handler(queue: _Queue | None) -> tuple:
            import gradio as gr

            if queue is None or not queue.items or i >= len(queue.items[0].candidates):
                raise gr.Error("No such candidate: identify photos first.")
            chosen = queue.items[0].candidates[i]
            return self._decided(queue, {"individual_id": chosen.individual_id})

        return handler

    def new(self, queue: _Queue | None, name: str) -> tuple:
        import gradio as gr

        name = (name or "").strip()
        if not name:
            raise gr.Error("Type a name for the new individual first.")
        return self._decided(queue, {"new_name": name})

    def skip(self, queue: _Queue | None) -> tuple:
        return self._decided(queue, None)

    # -- catalogue --------------------------------------------------------------------
    def table(self):
        frame = self.catalogue.individuals().copy()
        if "last_seen" in frame:
            frame["last_seen"] = frame["last_seen"].astype(str)
        return frame

    def export(self) -> str:
        out = Path(tempfile.mkdtemp(prefix="export-", dir=self.export_root))
        folder = Path(self.catalogue.export(out / "catalogue", sources=False))
        return shutil.make_archive(str(out / "wildid-catalogue"), "zip", folder)


def build_app(identifier: Any, catalogue: Any, export_root: str | Path | None = None):
    """The gr.Blocks of the app, bound to an `Identifier` and a `Catalogue`."""
    import gradio as gr

    root = Path(export_root or tempfile.mkdtemp(prefix="wildid-serve-"))
    handlers = _App(identifier, catalogue, root)
    with gr.Blocks(title="wildid") as blocks:
        queue = gr.State(None)
        gr.Markdown("# wildid: who is this animal?")
        with gr.Tab("Identify", elem_id="tab-identify"):
            with gr.Row():
                with gr.Column(scale=1):
                    upload = gr.File(
                        label=f"Photos ({', '.join(ALLOWED_SUFFIXES)}; up to {MAX_PHOTOS})",
                        file_count="multiple",
                        file_types=list(ALLOWED_SUFFIXES),
                        type="filepath",
                        elem_id="upload",
                    )
                    sighting = gr.Checkbox(
                        label="All photos are from the same encounter (they vote together)",
                        elem_id="sighting",
                    )
                    identify = gr.Button("Identify", variant="primary", elem_id="identify")
                with gr.Column(scale=2):
                    status = gr.Markdown("Upload photos and press **Identify**.", elem_id="status")
                    crops = gr.Gallery(
                        label="The crop the model saw",
                        visible=False,
                        columns=4,
                        height=200,
                        preview=False,
                        fit_columns=False,
                        object_fit="contain",
                        interactive=False,
                        buttons=["fullscreen"],
                        elem_id="crops",
                    )
            slots = []
            with gr.Row():
                for i in range(1, TOP_K + 1):
                    with gr.Column(min_width=140):
                        photo = gr.Image(
                            visible=False,
                            interactive=False,
                            type="filepath",
                            height=180,
                            buttons=["fullscreen"],
                            elem_id=f"candidate-{i}-photo",
                        )
                        info = gr.Markdown(visible=False, elem_id=f"candidate-{i}-info")
                        confirm = gr.Button(visible=False, elem_id=f"confirm-{i}")
                    slots.append((photo, info, confirm))
            with gr.Row(visible=False) as decision:
                new_name = gr.Textbox(
                    label="None of these: name the new individual",
                    placeholder="e.g. NY-2024-017",
                    elem_id="new-name",
                )
                new = gr.Button("Declare new individual", elem_id="new-individual")
                skip = gr.Button("Skip (decide later)", elem_id="skip")
        with gr.Tab("Catalogue", elem_id="tab-catalogue") as catalogue_tab:
            table = gr.Dataframe(value=handlers.table, interactive=False, elem_id="catalogue-table")
            with gr.Row():
                refresh = gr.Button("Refresh", elem_id="catalogue-refresh")
                export = gr.Button("Export catalogue (zip)", elem_id="export")
            download = gr.File(label="Download", interactive=False, elem_id="export-file")

        shown = [status, crops]
        for photo, info, confirm in slots:
            shown += [photo, info, confirm]
        shown.append(decision)
        identify.click(handlers.identify, [upload, sighting], [queue, *shown])
        after = [queue, *shown, new_name, table]
        for i, (_, _, confirm) in enumerate(slots):
            confirm.click(handlers.confirm(i), [queue], after)
        new.click(handlers.new, [queue, new_name], after)
        skip.click(handlers.skip, [queue], after)
        refresh.click(handlers.table, None, table)
        catalogue_tab.select(handlers.table, None, table)
        export.click(handlers.export, None, download)
    return blocks


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def thumbnail_dirs(package_root: Path) -> list[str]:
    """The only package folders the browser may fetch from: the gallery's thumbnails."""
    return [str(package_root / "gallery" / "thumbs"), str(package_root / "enrolled" / "thumbs")]


def serve(
    package: str | Path,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    block: bool = True,
    workdir: str | Path | None = None,
):
    """Open `package` (archive or directory) and serve the app; returns the gr.Blocks
    (already closed when `block`, else running in a background thread)."""
    from wildid.gallery.identify import Identifier
    from wildid.gallery.package import open_package
    from wildid.gallery.store import Catalogue

    pkg = open_package(package, workdir)
    root = Path(pkg.root).resolve()
    private = Path(tempfile.mkdtemp(prefix="wildid-serve-"))  # 0700
    (private / "uploads").mkdir()
    # Gradio keeps uploads and the copies of shown files here: one private folder per
    # app, not the machine-wide /tmp/gradio that other users' apps share.
    os.environ["GRADIO_TEMP_DIR"] = str(private / "uploads")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(private / "examples")
    identifier = Identifier(pkg)
    catalogue = getattr(identifier, "catalogue", None) or Catalogue(pkg, identifier.embedder)
    blocks = build_app(identifier, catalogue, export_root=private / "uploads")
    import gradio as gr

    theme = gr.themes.Default(
        font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    previous = None
    if block and threading.current_thread() is threading.main_thread():
        # `kill` (SIGTERM) stops the app like Ctrl+C, so the private folder is removed.
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        blocks.launch(
            server_name=host,
            server_port=port,
            share=False,
            prevent_thread_lock=not block,
            allowed_paths=thumbnail_dirs(root),
            max_file_size=MAX_UPLOAD_BYTES,
            ssr_mode=False,
            show_error=True,
            quiet=True,
            footer_links=[],
            theme=theme,
        )
    finally:
        if block:
            blocks.close()
            shutil.rmtree(private, ignore_errors=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return blocks
