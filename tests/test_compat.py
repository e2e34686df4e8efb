"""Options removed from the config: configs written before their removal load at the old defaults, and are refused
with a message naming the option at any other value. Unknown keys stay errors."""

import json
import logging

import pytest

from querylife.compat import REMOVED_OPTIONS
from querylife.config import ConfigError, load_config, save_config
from querylife.fusion import FusionConfig
from querylife.losses import LossConfig

# Every removed key with its old default, as an experiment config from an earlier version held them.
OLD_DEFAULTS = {
    "model.fusion.gate_inputs": "type_query",
    "model.fusion.type_gate": "free",
    "model.fusion.image_score_offset": False,
    "loss.query_fused_in_type": 0.0,
    "train.gate_net_lr_multiplier": 1.0,
    "model.query_heads": "shared",
}

NON_DEFAULT = [
    ("model.fusion.gate_inputs", "type_query_modalities"),
    ("model.fusion.gate_inputs", "type"),
    ("model.fusion.type_gate", "predicted"),
    ("model.fusion.image_score_offset", True),
    ("loss.query_fused_in_type", 1.0),
    ("train.gate_net_lr_multiplier", 10.0),
    ("model.query_heads", "per_modality"),
]


def test_the_registry_lists_exactly_the_removed_options():
    listed = {f"{section}.{key}": o.default for section, keys in REMOVED_OPTIONS.items() for key, o in keys.items()}
    assert listed == OLD_DEFAULTS


def _old_config_file(tmp_path, **changes):
    """An experiment config.json as an earlier version saved it (every section, removed keys included)."""
    tree = load_config().model_dump(mode="json")
    for dotted, value in {**OLD_DEFAULTS, **changes}.items():
        *sections, key = dotted.split(".")
        node = tree
        for name in sections:
            node = node[name]
        node[key] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(tree))
    return path


def test_old_config_at_the_old_defaults_loads_as_today(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="querylife.compat"):
        cfg = load_config(_old_config_file(tmp_path))
    assert cfg.model_dump() == load_config().model_dump()
    assert "gate_inputs" in caplog.text and "ignored" in caplog.text


@pytest.mark.parametrize(("key", "value"), NON_DEFAULT)
def test_old_config_using_a_removed_option_is_an_error(tmp_path, key, value):
    path = _old_config_file(tmp_path, **{key: value})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and f"{key}={value!r}" in message and "was removed" in message


@pytest.mark.parametrize(("key", "value"), NON_DEFAULT)
def test_removed_options_in_overrides(key, value):
    default = OLD_DEFAULTS[key]
    assert load_config(None, [f"{key}={json.dumps(default)}"]).model_dump() == load_config().model_dump()
    with pytest.raises(ConfigError, match="was removed"):
        load_config(None, [f"{key}={json.dumps(value)}"])


def test_removed_options_in_python_constructors():
    assert FusionConfig(gate_inputs="type_query") == FusionConfig()
    with pytest.raises(ValueError, match=r"model\.fusion\.type_gate='predicted': this option was removed"):
        FusionConfig(type_gate="predicted")
    with pytest.raises(ValueError, match="query_fused_in_type"):
        LossConfig(query_fused_in_type=0.5)


def test_unknown_keys_are_still_errors(tmp_path):
    with pytest.raises(ConfigError, match="renormalise"):
        load_config(None, ["model.fusion.renormalise=true"])
    path = _old_config_file(tmp_path)
    tree = json.loads(path.read_text())
    tree["train"]["gate_lr_multipler"] = 30.0
    path.write_text(json.dumps(tree))
    with pytest.raises(ConfigError, match="gate_lr_multipler"):
        load_config(path)


def test_saved_configs_no_longer_hold_removed_keys(tmp_path):
    save_config(load_config(), tmp_path / "c.json")
    tree = json.loads((tmp_path / "c.json").read_text())
    for dotted in OLD_DEFAULTS:
        *sections, key = dotted.split(".")
        node = tree
        for name in sections:
            node = node[name]
        assert key not in node, dotted


@pytest.mark.parametrize("value", [True, False])
def test_renormalize_is_the_old_name_of_normalize(tmp_path, value):
    # Removed once (it was always the cosine), back as model.fusion.normalize: an old config keeps its choice.
    assert FusionConfig(renormalize=value).normalize is value
    path = _old_config_file(tmp_path, **{"model.fusion.renormalize": value})
    tree = json.loads(path.read_text())
    del tree["model"]["fusion"]["normalize"]  # written before the new name existed
    path.write_text(json.dumps(tree))
    assert load_config(path).model.fusion.normalize is value
    assert load_config(None, [f"model.fusion.renormalize={json.dumps(value)}"]).model.fusion.normalize is value
    assert FusionConfig(renormalize=value, normalize=value).normalize is value
    with pytest.raises(ValueError, match="renormalize=.* contradicts model.fusion.normalize"):
        FusionConfig(renormalize=value, normalize=not value)
