"""The field biologist's loop: package a trained run, identify new photos, grow the catalogue.

* `package`: `build_package` writes one zip archive (weights as safetensors, the resolved
  config, the gallery, the open-set threshold, a score calibration, versions and a SHA-256
  manifest); `open_package` unpacks one safely into a `Package` directory; `inspect_package`.
* `store`: the `Catalogue` of a package directory (SQLite records and history, embeddings
  beside it): enroll photos without retraining, undo, list individuals, export.
* `embedder`: the packaged model on CPU and the crop a new photo gets.
* `calibration`: similarity -> probability of being the same animal.
* `identify`: `Identifier.identify` ranks individuals for new photos (or one sighting of
  several photos voting together); `match_sheet` draws the candidates side by side.

The archive is immutable; the unpacked directory is the living catalogue that `enroll`
grows (see `package.open_package` for where it lives).
"""
