"""Residual per-modality query heads (``model.query_heads="per_modality_residual"``): q_v = normalize((W_t + Δ) x)
with Δ zero at step 0, Δ the only extra parameter, its own AdamW decay (``model.query_image_delta_decay``) and no
other parameter's, the exported head, save/load."""

import pytest
import torch
import torch.nn.functional as F
from test_query_heads import _batch, _forward, _model_config

from querylife.model import ModelConfig, QueryLifeModel
from querylife.onnx_export import query_tower_module

RES = "per_modality_residual"


def test_step_zero_q_v_equals_q_t_and_delta_is_the_only_extra_parameter(tiny_text_model_dir):
    torch.manual_seed(0)
    shared = QueryLifeModel(_model_config(tiny_text_model_dir))
    torch.manual_seed(0)
    res = QueryLifeModel(_model_config(tiny_text_model_dir, query_heads=RES))
    assert res.query_dim == 32 and res.fusion.per_modality and res.query_image_proj is None
    assert torch.equal(res.query_image_delta, torch.zeros(16, res.text_tower.dim))
    extra = {k for k, _ in res.named_parameters()} - {k for k, _ in shared.named_parameters()}
    assert extra == {"query_image_delta"}
    a, b = _forward(shared), _forward(res)
    assert torch.equal(b.q[:, :16], a.q) and torch.equal(b.q[:, 16:], b.q[:, :16])  # q_v == q_t exactly
    assert torch.equal(b.t, a.t) and torch.equal(b.v, a.v)
    for name in ("query_title", "query_image", "title_image"):
        assert torch.equal(b.sims[name], a.sims[name])
    # q_v is normalize((W_t + Δ) x): with Δ = -2 W_t it is -q_t, and q_t does not move
    with torch.no_grad():
        res.query_image_delta.copy_(-2 * res.title_proj.weight)
    c = _forward(res)
    assert torch.equal(c.q[:, :16], a.q)
    assert torch.allclose(c.q[:, 16:], -a.q, atol=1e-6)


def test_gradient_reaches_delta_and_the_shared_head(tiny_text_model_dir):
    model = QueryLifeModel(_model_config(tiny_text_model_dir, query_heads=RES))
    model.train()
    out = _forward(model)
    out.sims["query_image"].diagonal().sum().backward()  # only the q_v half enters this term
    assert model.query_image_delta.grad.abs().sum() > 0
    # dL/dΔ = dL/d(W_t + Δ): the shared head gets the same gradient through q_v (plus nothing else here)
    assert torch.allclose(model.title_proj.weight.grad, model.query_image_delta.grad)


def test_delta_alone_gets_its_decay(tiny_text_model_dir):
    model = QueryLifeModel(_model_config(tiny_text_model_dir, query_heads=RES, query_image_delta_decay=7.0))
    groups = model.parameter_groups(1e-3, 0.01, 30.0)
    own = [g for g in groups if any(p is model.query_image_delta for p in g["params"])]
    assert len(own) == 1 and own[0]["name"] == "query_image_delta"
    assert own[0]["params"] == [model.query_image_delta] and own[0]["weight_decay"] == 7.0 and own[0]["lr"] == 1e-3
    decay = next(g for g in groups if g["name"] == "decay")
    assert decay["weight_decay"] == 0.01 and any(p is model.title_proj.weight for p in decay["params"])
    n_params = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in groups) == n_params  # every parameter in exactly one group
    # one AdamW step with no gradient anywhere: Δ shrinks by lr x decay, the other weights by lr x 0.01
    with torch.no_grad():
        model.query_image_delta.fill_(1.0)
    w_before = model.title_proj.weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    torch.optim.AdamW(groups).step()
    assert torch.allclose(model.query_image_delta, torch.full_like(model.query_image_delta, 1 - 1e-3 * 7.0))
    assert torch.allclose(model.title_proj.weight, w_before * (1 - 1e-3 * 0.01))


def test_default_has_no_delta_and_the_decay_key_is_checked(tiny_text_model_dir):
    model = QueryLifeModel(_model_config(tiny_text_model_dir))
    assert model.query_image_delta is None and model.query_image_head() is None
    assert [g["name"] for g in model.parameter_groups(1e-3, 0.01, 30.0)] == [
        "decay", "no_decay", "gate", "scale", "gate_net"
    ]
    with pytest.raises(ValueError, match="query_image_delta_decay"):
        ModelConfig(query_image_delta_decay=-1.0)
    with pytest.raises(ValueError, match="query_image_delta_decays"):
        ModelConfig(query_image_delta_decays=1.0)
    with pytest.raises(ValueError, match='query_heads="per_modality_residual" does not work'):
        ModelConfig(query_heads=RES, fusion={"mode": "concat"})


def test_save_load_round_trip_and_exported_head(tiny_text_model_dir, tmp_path):
    cfg = _model_config(tiny_text_model_dir, query_heads=RES, query_image_delta_decay=5.0)
    model = QueryLifeModel(cfg)
    with torch.no_grad():
        model.query_image_delta.add_(0.1 * torch.randn_like(model.query_image_delta))
    model.eval()
    before = _forward(model).scores
    model.save_pretrained(tmp_path / "ckpt")
    loaded = QueryLifeModel.from_pretrained(tmp_path / "ckpt")
    assert loaded.config.query_heads == RES and loaded.config.query_image_delta_decay == 5.0
    assert torch.equal(loaded.query_image_delta, model.query_image_delta)
    assert torch.equal(_forward(loaded).scores, before)
    # the export's q_v head is W_t + Δ materialised: the same vectors as project_queries
    module, tower = query_tower_module(loaded)
    queries = _batch()[0]
    tok = tower.tokenize(queries)
    with torch.no_grad():
        exported = module(*[tok[k] for k in module.input_names])
        eager = loaded.encode_queries(queries)
    assert exported.shape == (4, 32)
    assert torch.allclose(exported, eager, atol=1e-5)
    assert not F.normalize(exported[:, 16:], dim=-1).allclose(exported[:, :16], atol=1e-3)  # Δ does move q_v


def test_trainer_step_moves_delta_and_grad_cache_agrees(tiny_config, tiny_store, tmp_path):
    from test_gradcache import assert_same, flag_some, one_step

    from querylife.config import with_overrides
    from querylife.data.prepare import prepare_dataset

    data = prepare_dataset(tiny_store.catalog_path, tiny_store.pairs_path, image_size=32, progress=False)
    overrides = {"model.query_heads": RES, "model.query_image_delta_decay": 3.0, "train.gate_start_fraction": 0.0}
    cfg = with_overrides(tiny_config, overrides)
    plain = one_step(cfg, data, tmp_path, "plain", chunk=0, train_mode=False, judge=flag_some)
    cached = one_step(cfg, data, tmp_path, "cached", chunk=5, train_mode=False, judge=flag_some)
    assert plain[1]["query_image_delta"].abs().sum() > 0  # the trainer's loss reaches Δ
    assert plain[2]["query_image_delta"].abs().sum() > 0  # and its optimiser moves it off zero
    assert_same(plain, cached)
