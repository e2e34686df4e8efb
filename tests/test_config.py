"""Config loading: YAML/JSON files, dotted overrides, unknown keys are errors."""

import json

import pytest

from querylife.config import ConfigError, load_config, save_config, with_overrides


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.lr=3e-4", "model.fusion.mode=mean", "model.tower.small_cnn.channels=[8,16]"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.model.fusion.mode == "mean"
    assert cfg.model.tower.small_cnn.channels == (8, 16)


def test_yaml_and_json_files(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("train:\n  epochs: 3\nloss:\n  query_image: 0\n")
    cfg = load_config(y, ["train.epochs=4"])
    assert cfg.train.epochs == 4 and cfg.loss.query_image == 0
    j = tmp_path / "c.json"
    save_config(cfg, j)
    assert load_config(j).model_dump() == cfg.model_dump()
    assert json.loads(j.read_text())["train"]["epochs"] == 4


@pytest.mark.parametrize(
    "override", ["train.lrr=1", "modle.embed_dim=3", "model.fusion.mode=attention", "train.epochs=many"]
)
def test_unknown_or_invalid_keys_are_errors(override):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert override.split("=")[0].split(".")[0] in str(err.value)


def test_bad_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["train.lr"])


def test_with_overrides_validates():
    cfg = load_config()
    assert with_overrides(cfg, {"loss.query_title": 0.0}).loss.query_title == 0.0
    with pytest.raises(ConfigError):
        with_overrides(cfg, {"loss.nope": 1})


def test_config_from_a_mapping_as_from_a_file(tmp_path):
    tree = {"train": {"epochs": 3}, "eval": {"calibration": "isotonic"}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(tree))
    from_tree = load_config(tree=tree, overrides=["train.epochs=5"], source="summary.json")
    assert from_tree == load_config(path, ["train.epochs=5"])
    assert tree["train"]["epochs"] == 3  # the caller's mapping is not changed by the overrides
    with pytest.raises(ConfigError, match="summary.json"):
        load_config(tree={"train": {"nope": 1}}, source="summary.json")
    with pytest.raises(ValueError, match="not both"):
        load_config(path, tree=tree)
