"""The example configs shipped in configs/: each loads (unknown keys are errors), and demo.yaml stays the demo's."""

from pathlib import Path

import pytest

from querylife.config import ConfigError, ExperimentConfig, load_config, with_overrides
from querylife.pipeline import DEMO_TOWER, demo_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FILES = sorted(CONFIGS.glob("*.yaml")) + sorted(CONFIGS.glob("*.json"))


def test_the_documented_examples_exist():
    assert {"demo.yaml", "catalogue.yaml", "crowdflower.yaml"} <= {p.name for p in FILES}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_example_config_loads(path):
    cfg = load_config(path)
    assert cfg.data.path or (cfg.data.catalog and cfg.data.pairs), f"{path.name} names no data"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_a_typo_in_an_example_config_is_an_error(path, tmp_path):
    copy = tmp_path / path.name
    copy.write_text(path.read_text().replace("\ntrain:\n", "\ntrain:\n  epochz: 3\n", 1))
    assert copy.read_text() != path.read_text(), f"{path.name} has no train section"
    with pytest.raises(ConfigError, match="epochz"):
        load_config(copy)


def test_demo_config_is_the_demo_settings():
    # `querylife demo` trains with the defaults and the demo's vision tower, pointed at its storefront and split by
    # intent (run_demo); the values demo.yaml writes out must stay those.
    demo = load_config(CONFIGS / "demo.yaml")
    expected = with_overrides(
        demo_config(),
        {
            "data.catalog": "runs/demo/data/catalog.parquet",
            "data.pairs": "runs/demo/data/pairs.parquet",
            "data.split_by": "intent",
        },
    )
    assert demo.model_dump() == expected.model_dump()
    assert demo.model.tower.vision_model == "efficientnet-lite0" and demo.model.tower.train_vision_layers == 0


def test_demo_tower_is_pretrained_and_frozen_and_set_overrides_win():
    assert DEMO_TOWER == {"model.tower.vision_model": "efficientnet-lite0", "model.tower.train_vision_layers": 0}
    back = demo_config(None, ["model.tower.vision_model=small_cnn", "model.tower.train_vision_layers=-1"])
    assert back.model.tower == ExperimentConfig().model.tower  # --set restores the small CNN exactly
    assert ExperimentConfig().model.tower.vision_model == "small_cnn"  # the library default is unchanged
    # a config file is taken as it is: the demo tower is only the default when no file is given
    assert demo_config(CONFIGS / "catalogue.yaml").model.tower == load_config(CONFIGS / "catalogue.yaml").model.tower


def test_crowdflower_config_is_text_only():
    cfg = load_config(CONFIGS / "crowdflower.yaml")
    assert cfg.data.format == "crowdflower" and cfg.model.fusion.mode == "title"
    assert (cfg.loss.query_title, cfg.loss.query_image, cfg.loss.title_image) == (0, 0, 0)
