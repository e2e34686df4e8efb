"""The example configs shipped in configs/: each loads (unknown keys are errors), and demo.yaml stays the demo's."""

from pathlib import Path

import pytest

from querylife.config import ConfigError, ExperimentConfig, load_config, with_overrides
from querylife.pipeline import demo_config
from querylife.towers import VisionTower, vision_train_layers

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
    assert demo.model.tower.vision_model == "efficientnet-lite0" and vision_train_layers(demo.model.tower) == 0


def test_default_tower_is_frozen_lite0_and_set_overrides_win():
    tower = ExperimentConfig().model.tower
    assert tower.vision_model == "efficientnet-lite0" and vision_train_layers(tower) == 0
    assert VisionTower(tower).frozen  # each photo is encoded once, then cached
    back = demo_config(None, ["model.tower.vision_model=small_cnn"])
    assert back.model.tower.vision_model == "small_cnn"
    assert vision_train_layers(back.model.tower) == -1  # the small CNN trains by default: random features are useless
    frozen_cnn = demo_config(None, ["model.tower.vision_model=small_cnn", "model.tower.train_vision_layers=0"])
    assert vision_train_layers(frozen_cnn.model.tower) == 0  # an explicit value always wins
    # a config file is taken as it is
    assert demo_config(CONFIGS / "catalogue.yaml").model.tower == load_config(CONFIGS / "catalogue.yaml").model.tower


def test_crowdflower_config_is_text_only():
    cfg = load_config(CONFIGS / "crowdflower.yaml")
    assert cfg.data.format == "crowdflower" and cfg.model.fusion.mode == "title"
    assert (cfg.loss.query_title, cfg.loss.query_image, cfg.loss.title_image) == (0, 0, 0)
    # no product has a photo: the unused vision tower is the tiny CNN, not the default Lite0 on blank 224 px images
    assert cfg.model.tower.vision_model == "small_cnn" and cfg.model.tower.small_cnn.image_size == 8
