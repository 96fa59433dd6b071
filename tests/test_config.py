"""Config loading: `_base_` chains, overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wildid.config import (
    Config,
    ConfigError,
    load_config,
    load_raw,
    parse_overrides,
    save_config,
    shipped_configs,
)
from wildid.layout import RunLayout

REPO = Path(__file__).resolve().parents[1]


def _yaml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_repo_configs_load() -> None:
    for path in sorted((REPO / "configs").glob("*.yaml")):
        assert isinstance(load_config(path), Config), path


def test_base_chain_merges_nested_sections(tmp_path: Path) -> None:
    _yaml(tmp_path / "a.yaml", "name: a\ntrain: {epochs: 3, lr: 0.5}\nmodel: {embedding_dim: 64}\n")
    _yaml(tmp_path / "sub" / "b.yaml", "_base_: ../a.yaml\nname: b\ntrain: {epochs: 4}\n")
    leaf = _yaml(tmp_path / "sub" / "c.yaml", "_base_: b.yaml\ntrain: {batch_size: 8}\n")
    config = load_config(leaf)
    assert config.name == "b"  # from b, which overrides a
    assert (config.train.epochs, config.train.lr, config.train.batch_size) == (4, 0.5, 8)
    assert config.model.embedding_dim == 64  # untouched section kept from a
    assert config.train.image_size == Config().train.image_size  # schema default


def test_list_of_bases_merges_left_to_right(tmp_path: Path) -> None:
    _yaml(tmp_path / "one.yaml", "name: one\ntrain: {epochs: 1, lr: 0.1}\n")
    _yaml(tmp_path / "two.yaml", "name: two\ntrain: {epochs: 2}\n")
    leaf = _yaml(tmp_path / "leaf.yaml", "_base_: [one.yaml, two.yaml]\n")
    raw = load_raw(leaf)
    assert raw == {"name": "two", "train": {"epochs": 2, "lr": 0.1}}


def test_overrides_are_yaml_values_and_win_over_the_file(tmp_path: Path) -> None:
    path = _yaml(tmp_path / "c.yaml", "train: {epochs: 3}\n")
    config = load_config(
        path,
        [
            "train.epochs=7",
            "train.lr=1e-4",
            "crop.kinds=[backfin, whole]",
            "baseline=false",
            "data=some/dir",
            "retrieval.threshold=",
        ],
    )
    assert config.train.epochs == 7
    assert config.train.lr == pytest.approx(1e-4)
    assert config.crop.kinds == ["backfin", "whole"]
    assert config.baseline is False
    assert config.data == "some/dir"
    assert config.retrieval.threshold is None


def test_parse_overrides_nests_dotted_keys() -> None:
    assert parse_overrides(["a.b.c=1", "a.b.d=x", "e=true"]) == {
        "a": {"b": {"c": 1, "d": "x"}},
        "e": True,
    }


@pytest.mark.parametrize("item", ["train.epochs", "=3", "novalue"])
def test_override_without_key_or_equals_is_an_error(item: str) -> None:
    with pytest.raises(ConfigError, match=f"override '{item}': expected key=value"):
        parse_overrides([item])


@pytest.mark.parametrize(
    ("override", "key", "suggestion"),
    [
        ("trian.epochs=3", "trian", "train"),
        ("train.epoch=3", "train.epoch", "epochs"),
        ("model.backbon=x", "model.backbon", "backbone"),
        ("nmae=x", "nmae", "name"),
    ],
)
def test_unknown_key_is_named_with_a_suggestion(override: str, key: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value) == (
        f"command line override {override}: unknown key '{key}' (did you mean '{suggestion}'?)"
    )


def test_unknown_key_without_a_close_name_has_no_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'zzzzzz'$"):
        load_config(None, ["zzzzzz=1"])


def test_unknown_key_in_a_file_names_the_file(tmp_path: Path) -> None:
    base = REPO / "configs" / "base.yaml"
    path = _yaml(tmp_path / "bad.yaml", f"_base_: {base}\ntrain: {{ephocs: 2}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["train.epochs=3"])  # an override beside it is not blamed
    assert str(info.value) == (
        f"{path.resolve()}: unknown key 'train.ephocs' (did you mean 'epochs'?)"
    )


def test_unknown_key_in_a_base_names_the_base_not_the_leaf(tmp_path: Path) -> None:
    base = _yaml(tmp_path / "base.yaml", "trian: {epochs: 2}\n")
    leaf = _yaml(tmp_path / "leaf.yaml", "_base_: base.yaml\nname: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(leaf)
    assert str(info.value).startswith(f"{base.resolve()}: unknown key 'trian'")


def test_missing_base_names_the_config_that_refers_to_it(tmp_path: Path) -> None:
    leaf = _yaml(tmp_path / "leaf.yaml", "_base_: gone.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_config(leaf)
    message = str(info.value)
    assert "gone.yaml: config file not found" in message
    assert f"the `_base_` of {leaf.resolve()}" in message


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.epochs=many", "train.epochs"),
        ("train.lr=-1", "train.lr"),
        ("crop.kinds=[tail]", "crop.kinds.0"),
        ("train.precision=fp8", "train.precision"),
        ("train=3", "train"),
    ],
)
def test_wrong_type_or_value_names_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value).startswith(f"command line override {override}: {key}:")


def test_every_error_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.epochs=x", "nmae=a"])
    message = str(info.value)
    assert message.startswith("invalid config, 2 errors: ") and "\n" not in message
    assert "override train.epochs=x: train.epochs:" in message
    assert "override nmae=a: unknown key 'nmae'" in message


def test_base_cycle_is_an_error(tmp_path: Path) -> None:
    _yaml(tmp_path / "a.yaml", "_base_: b.yaml\n")
    _yaml(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    _yaml(tmp_path / "self.yaml", "_base_: self.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "self.yaml")


def test_same_base_twice_in_a_diamond_is_not_a_cycle(tmp_path: Path) -> None:
    _yaml(tmp_path / "root.yaml", "train: {epochs: 2}\n")
    _yaml(tmp_path / "l.yaml", "_base_: root.yaml\nname: l\n")
    _yaml(tmp_path / "r.yaml", "_base_: root.yaml\ndata: r\n")
    leaf = _yaml(tmp_path / "leaf.yaml", "_base_: [l.yaml, r.yaml]\n")
    assert load_raw(leaf) == {"train": {"epochs": 2}, "name": "l", "data": "r"}


def test_missing_file_invalid_yaml_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_yaml(tmp_path / "broken.yaml", "train: {epochs: [\n"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(_yaml(tmp_path / "list.yaml", "- a\n- b\n"))
    missing_base = _yaml(tmp_path / "orphan.yaml", "_base_: gone.yaml\n")
    with pytest.raises(ConfigError, match=r"gone\.yaml: config file not found"):
        load_config(missing_base)


def test_resolved_config_saved_holds_every_key_and_reloads(tmp_path: Path) -> None:
    config = load_config(REPO / "configs" / "mini.yaml", ["train.epochs=2", "crop.margin=0.25"])
    path = save_config(config, tmp_path / "out" / "config.yaml")
    saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert saved["train"]["epochs"] == 2
    assert saved["train"]["weight_decay"] == Config().train.weight_decay  # defaults written
    assert set(saved) == set(Config.model_fields)
    assert load_config(path) == config  # a saved config reproduces the run


def test_prepare_saves_the_resolved_config(tiny_config) -> None:  # noqa: ANN001
    from wildid.pipeline import prepare

    config = tiny_config("train.lr=0.123")
    prepare(config)
    saved = load_config(RunLayout.of(config).root / "config.yaml")
    assert saved == config
    assert (RunLayout.of(config).root / "split.csv").is_file()


def test_crop_ratios_must_match_the_kinds() -> None:
    with pytest.raises(ConfigError, match="crop.ratios"):
        load_config(None, ["crop.kinds=[fullbody, backfin]", "crop.ratios=[0.6, 0.3, 0.1]"])
    config = load_config(
        None, ["crop.kinds=[fullbody, backfin, whole]", "crop.ratios=[0.6, 0.3, 0.1]"]
    )
    assert config.crop.ratios == [0.6, 0.3, 0.1]


def test_shipped_configs_load_by_name_from_anywhere(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """Configs ship inside the package: a bare `pip install` finds them by name."""
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    names = shipped_configs()
    assert {"mini", "base", "happywhale/tf_efficientnet_b6_ns"} <= set(names)
    for spelling in ("mini", "mini.yaml", "configs/mini.yaml"):
        assert load_config(spelling).name == "mini"
    for name in names:  # every shipped config is valid, _base_ chains included
        load_config(name)
    own = _yaml(tmp_path / "mini.yaml", "_base_: []\nname: mine\n")
    assert load_config("mini.yaml").name == "mine"  # a file where given wins
    assert load_config(own).name == "mine"
    with pytest.raises(ConfigError, match=r"nope: config file not found; .*happywhale/"):
        load_config("nope")


def test_crop_boxes_entries_and_the_fallback_opt_in() -> None:
    config = load_config(
        None,
        [
            "crop.boxes=[{path: /kaggle/input/x/fullbody_train.csv, kind: fullbody}, b.csv]",
            "crop.allow_fallback=true",
        ],
    )
    first, second = config.crop.boxes
    assert (first.path, first.kind, first.min_score) == (
        "/kaggle/input/x/fullbody_train.csv",
        "fullbody",
        0.01,
    )
    assert (second.path, second.kind) == ("b.csv", None)  # a bare path: the file's kinds
    assert config.crop.allow_fallback is True
    defaults = load_config(None).crop
    assert defaults.boxes is None and defaults.allow_fallback is None  # old runs' identity
    with pytest.raises(ConfigError, match="crop.boxes.0.kind"):
        load_config(None, ["crop.boxes=[{path: a.csv, kind: tail}]"])
    with pytest.raises(ConfigError, match="crop.source is whole"):
        load_config(None, ["crop.boxes=[a.csv]", "crop.source=whole"])
