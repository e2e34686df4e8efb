"""QueryLifeModel with tiny towers built in the test: outputs, gradients, freezing, save/load, CLIP towers."""

import json

import pytest
import torch

from querylife.model import ModelConfig, QueryLifeModel
from querylife.towers import SmallCNNConfig, TowerConfig

TYPES = ["dress", "charger", "cable"]


def _config(text_dir, **tower):
    tower_cfg = TowerConfig(
        text_model=str(text_dir), vision_model="small_cnn",
        small_cnn=SmallCNNConfig(channels=(8, 16), image_size=32), **tower
    )
    return ModelConfig(tower=tower_cfg, embed_dim=16, product_types=TYPES)


def _batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    has = torch.ones(n, dtype=torch.bool)
    has[-1] = False
    queries = ["red dress", "usb c cable", "fast charger 65 w", "blue striped shirt"][:n]
    titles = ["summer dress red", "usb c cable 2m", "charger 20 w", "classic shirt"][:n]
    return queries, titles, images, has


def test_forward_shapes_and_typed_output(tiny_text_model_dir):
    model = QueryLifeModel(_config(tiny_text_model_dir))
    queries, titles, images, has = _batch()
    out = model(
        type_ids=model.type_ids(["dress", "cable", "charger", "unseen type"]),
        has_image=has,
        queries=queries,
        titles=titles,
        images=images,
    )
    assert out.q.shape == out.t.shape == out.v.shape == (4, 16)
    assert torch.allclose(out.q.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.all(out.v[-1] == 0)  # no image -> zero vector
    assert out.scores.shape == out.image_weight.shape == (4, 4)
    assert torch.all(out.image_weight[:, -1] == 0)
    assert set(out.sims) == {"query_fused", "query_title", "query_image", "title_image"}
    assert model.type_ids(["unseen type"]).item() == 0
    assert torch.isfinite(out.scores).all()


def test_gradients_flow_to_trainable_parts_only(tiny_text_model_dir):
    model = QueryLifeModel(_config(tiny_text_model_dir))  # text tower frozen by default
    queries, titles, images, has = _batch()
    model.train()
    out = model(type_ids=model.type_ids(["dress"] * 4), has_image=has, queries=queries, titles=titles, images=images)
    (out.scores.diagonal().sum() - out.scores.sum() * 0.1).backward()
    assert all(p.grad is None for p in model.text_tower.parameters())
    assert model.title_proj.weight.grad.abs().sum() > 0
    assert model.image_proj.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.vision_tower.parameters())
    assert model.fusion.type_logit.grad.abs().sum() > 0
    assert not model.text_tower.training  # frozen towers stay in eval mode


def test_partial_unfreezing(tiny_text_model_dir):
    model = QueryLifeModel(_config(tiny_text_model_dir, train_text_layers=1))
    trainable = {n for n, p in model.text_tower.named_parameters() if p.requires_grad}
    assert any("layer.1." in n for n in trainable)
    assert not any("layer.0." in n for n in trainable)
    assert not any("embeddings" in n for n in trainable)


def test_precomputed_features_equal_tower_path(tiny_text_model_dir):
    model = QueryLifeModel(_config(tiny_text_model_dir)).eval()
    queries, titles, images, has = _batch()
    types = model.type_ids(["dress"] * 4)
    with torch.no_grad():
        a = model(type_ids=types, has_image=has, queries=queries, titles=titles, images=images)
        b = model(
            type_ids=types,
            has_image=has,
            query_features=model.text_features(queries, role="query"),
            title_features=model.text_features(titles),
            images=images,
        )
    assert torch.allclose(a.scores, b.scores, atol=1e-6)


def test_save_load_identical_scores(tiny_text_model_dir, tmp_path):
    model = QueryLifeModel(_config(tiny_text_model_dir, train_text_layers=1))
    torch.nn.init.normal_(model.fusion.gate_out.weight)
    with torch.no_grad():
        model.fusion.type_logit.copy_(torch.tensor([0.0, 1.0, -1.0, 2.0]))
    model.eval()
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").exists() and (tmp_path / "ckpt" / "config.json").exists()
    loaded = QueryLifeModel.from_pretrained(tmp_path / "ckpt")
    queries, titles, images, has = _batch()
    types = model.type_ids(["dress", "cable", "charger", "dress"])
    with torch.no_grad():
        a = model(type_ids=types, has_image=has, queries=queries, titles=titles, images=images)
        b = loaded(type_ids=types, has_image=has, queries=queries, titles=titles, images=images)
    assert torch.equal(a.scores, b.scores)
    assert loaded.types == model.types


# Fusion options removed in this version, as an earlier version wrote them into config.json at their defaults.
OLD_FUSION_DEFAULTS = {
    "gate_inputs": "type_query",
    "type_gate": "free",
    "image_score_offset": False,
}


def _with_old_fusion_keys(directory, **values) -> None:
    path = directory / "config.json"
    tree = json.loads(path.read_text())
    tree["fusion"].update({**OLD_FUSION_DEFAULTS, **values})
    path.write_text(json.dumps(tree))


def test_checkpoint_from_before_the_option_removal_loads(tiny_text_model_dir, tmp_path):
    model = QueryLifeModel(_config(tiny_text_model_dir)).eval()
    torch.nn.init.normal_(model.fusion.gate_out.weight)
    model.save_pretrained(tmp_path / "old")
    _with_old_fusion_keys(tmp_path / "old")
    loaded = QueryLifeModel.from_pretrained(tmp_path / "old")
    assert loaded.config.fusion == model.config.fusion
    queries, titles, images, has = _batch()
    types = model.type_ids(["dress", "cable", "charger", "dress"])
    with torch.no_grad():
        a = model(type_ids=types, has_image=has, queries=queries, titles=titles, images=images)
        b = loaded(type_ids=types, has_image=has, queries=queries, titles=titles, images=images)
    assert torch.equal(a.scores, b.scores)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("image_score_offset", True),
        ("gate_inputs", "type_query_modalities"),
        ("gate_inputs", "type"),
        ("type_gate", "predicted"),
    ],
)
def test_checkpoint_using_a_removed_option_is_refused(tiny_text_model_dir, tmp_path, key, value):
    QueryLifeModel(_config(tiny_text_model_dir)).save_pretrained(tmp_path / "old")
    _with_old_fusion_keys(tmp_path / "old", **{key: value})
    with pytest.raises(ValueError, match="was removed") as err:
        QueryLifeModel.from_pretrained(tmp_path / "old")
    message = str(err.value)
    assert str(tmp_path / "old" / "config.json") in message
    assert f"model.fusion.{key}={value!r}" in message


def test_from_pretrained_errors(tmp_path, tiny_text_model_dir):
    with pytest.raises(FileNotFoundError, match="config.json"):
        QueryLifeModel.from_pretrained(tmp_path)
    model = QueryLifeModel(_config(tiny_text_model_dir))
    model.save_pretrained(tmp_path / "a")
    other = QueryLifeModel(_config(tiny_text_model_dir).model_copy(update={"embed_dim": 8}))
    other.save_pretrained(tmp_path / "b")
    (tmp_path / "a" / "model.safetensors").write_bytes((tmp_path / "b" / "model.safetensors").read_bytes())
    with pytest.raises((ValueError, RuntimeError)):
        QueryLifeModel.from_pretrained(tmp_path / "a")


def test_clip_towers(tiny_clip_dir):
    cfg = ModelConfig(
        tower=TowerConfig(text_model=str(tiny_clip_dir), vision_model="same", train_vision_layers=0),
        embed_dim=16,
        product_types=TYPES,
    )
    model = QueryLifeModel(cfg)
    assert model.text_tower.is_clip and model.vision_tower.is_clip
    assert model.vision_tower.image_size == 32
    queries, titles, images, has = _batch()
    out = model(
        type_ids=model.type_ids(["dress"] * 4),
        has_image=has,
        queries=queries,
        titles=titles,
        images=torch.randint(0, 256, (4, 3, 48, 48), dtype=torch.uint8),
    )  # resized to the tower's 32 px
    assert out.scores.shape == (4, 4) and torch.isfinite(out.scores).all()
    assert model.vision_tower.frozen and model.text_tower.frozen


def test_separate_query_tower(tiny_text_model_dir, tiny_clip_dir):
    cfg = _config(tiny_text_model_dir).model_copy(
        update={
            "tower": TowerConfig(
                text_model=str(tiny_text_model_dir),
                query_model=str(tiny_clip_dir),
                vision_model="small_cnn", small_cnn=SmallCNNConfig(channels=(8,), image_size=32),
            )
        }
    )
    model = QueryLifeModel(cfg)
    assert model.query_tower is not None and model.query_tower.dim == 16
    q = model.encode_queries(["red dress"])
    assert q.shape == (1, 16)


def test_small_cnn_can_be_frozen_and_then_stays_fixed_in_training(tiny_text_model_dir):
    cfg = ModelConfig(
        tower=TowerConfig(
            text_model=str(tiny_text_model_dir), vision_model="small_cnn",
            small_cnn=SmallCNNConfig(channels=(8,), image_size=32),
            train_vision_layers=0,
        ),
        embed_dim=16,
    )
    model = QueryLifeModel(cfg).train()
    assert model.vision_tower.frozen and not model.vision_tower.training  # batch-norm statistics do not move
    before = {k: v.clone() for k, v in model.vision_tower.state_dict().items()}
    images = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)
    model.image_features(images)
    assert all(torch.equal(before[k], v) for k, v in model.vision_tower.state_dict().items())
    assert not QueryLifeModel(cfg.model_copy(update={"tower": cfg.tower.model_copy(
        update={"train_vision_layers": -1})})).vision_tower.frozen


def test_query_head_shared_by_default_separate_on_request(tiny_text_model_dir):
    shared = QueryLifeModel(_config(tiny_text_model_dir))
    assert shared.query_proj is None
    q, t = shared.encode_queries(["red dress"]), shared.encode_titles(["red dress"])
    assert torch.allclose(q, t, atol=1e-6)  # same text, same tower, same head
    own = QueryLifeModel(_config(tiny_text_model_dir).model_copy(update={"separate_query_projection": True}))
    assert own.query_proj is not None and own.query_proj.weight is not own.title_proj.weight
