"""Fusion modes: shapes, gate range, missing images, gradients, pairwise == paired, index vectors."""

import pytest
import torch
import torch.nn.functional as F

from querylife.fusion import FUSION_MODES, Fusion, FusionConfig

D, N_TYPES = 8, 4


def _inputs(bq=3, bp=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(bq, D, generator=g), dim=-1)
    t = F.normalize(torch.randn(bp, D, generator=g), dim=-1)
    v = F.normalize(torch.randn(bp, D, generator=g), dim=-1)
    types = torch.randint(0, N_TYPES, (bp,), generator=g)
    has = torch.ones(bp, dtype=torch.bool)
    return q, t, v, types, has


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_shapes_and_gate_range(mode):
    fusion = Fusion(FusionConfig(mode=mode), N_TYPES, D)
    q, t, v, types, has = _inputs()
    out = fusion.pairwise(q, t, v, types, has)
    assert out.scores.shape == (3, 5)
    assert torch.isfinite(out.scores).all()
    if mode == "concat":
        assert out.image_weight is None
    else:
        assert out.image_weight.shape == (3, 5)
        assert ((out.image_weight >= 0) & (out.image_weight <= 1)).all()
    assert fusion.index_vectors(t, v, types, has).shape == (5, D)
    with_offset = Fusion(FusionConfig(mode=mode, image_score_offset=True), N_TYPES, D)
    gated = mode in ("type_gate", "query_type_gate")  # the offset is one extra coordinate of the index vectors
    assert with_offset.index_vectors(t, v, types, has).shape == (5, D + gated)


@pytest.mark.parametrize("mode", FUSION_MODES)
@pytest.mark.parametrize("inputs", ["type", "type_query", "type_query_modalities"])
def test_pairwise_matches_paired(mode, inputs):
    torch.manual_seed(0)
    fusion = Fusion(FusionConfig(mode=mode, gate_inputs=inputs), N_TYPES, D)
    if hasattr(fusion, "gate_out"):  # make the query-aware part non-trivial
        torch.nn.init.normal_(fusion.gate_out.weight)
    q, t, v, types, has = _inputs(4, 4)
    has[1] = False
    v = v * has.unsqueeze(-1)
    full = fusion.pairwise(q, t, v, types, has).scores
    diag = fusion.paired(q, t, v, types, has).scores
    assert torch.allclose(full.diagonal(), diag, atol=1e-6)
    # row 0 against every product, paired form
    rows = fusion.paired(q[:1].expand(4, -1), t, v, types, has).scores
    assert torch.allclose(full[0], rows, atol=1e-6)


def test_fixed_modes_values():
    q, t, v, types, has = _inputs()
    title = Fusion(FusionConfig(mode="title"), N_TYPES, D).pairwise(q, t, v, types, has).scores
    assert torch.allclose(title, q @ t.T, atol=1e-6)
    image = Fusion(FusionConfig(mode="image"), N_TYPES, D).pairwise(q, t, v, types, has).scores
    assert torch.allclose(image, q @ v.T, atol=1e-6)
    mean = Fusion(FusionConfig(mode="mean"), N_TYPES, D).pairwise(q, t, v, types, has).scores
    assert torch.allclose(mean, q @ F.normalize(t + v, dim=-1).T, atol=1e-5)
    raw = Fusion(FusionConfig(mode="mean", renormalize=False), N_TYPES, D).pairwise(q, t, v, types, has).scores
    assert torch.allclose(raw, q @ ((t + v) / 2).T, atol=1e-6)


@pytest.mark.parametrize("mode", ["image", "mean", "type_gate", "query_type_gate"])
def test_missing_image_falls_back_to_title(mode):
    q, t, v, types, has = _inputs()
    has[2] = False
    v = v.clone()
    v[2] = 0
    out = Fusion(FusionConfig(mode=mode), N_TYPES, D).pairwise(q, t, v, types, has)
    assert torch.all(out.image_weight[:, 2] == 0)
    assert torch.allclose(out.scores[:, 2], q @ t[2], atol=1e-6)
    assert torch.isfinite(out.scores).all()


@pytest.mark.parametrize("mode", ["concat", "type_gate", "query_type_gate"])
@pytest.mark.parametrize("type_gate", ["free", "predicted"])
def test_gradients_reach_gate_and_inputs(mode, type_gate):
    fusion = Fusion(FusionConfig(mode=mode, type_gate=type_gate, gate_inputs="type_query_modalities"), N_TYPES, D)
    q, t, v, types, has = _inputs()
    q.requires_grad_(True)
    t.requires_grad_(True)
    v.requires_grad_(True)
    fusion.pairwise(q, t, v, types, has).scores.sum().backward()
    assert q.grad.abs().sum() > 0 and t.grad.abs().sum() > 0 and v.grad.abs().sum() > 0
    trainable = [p for p in fusion.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert trainable, "no fusion parameter received a gradient"
    if mode != "concat" and type_gate == "free":
        assert fusion.type_logit.grad.abs().sum() > 0


def test_query_aware_gate_depends_on_query_and_starts_as_type_gate():
    fusion = Fusion(FusionConfig(mode="query_type_gate"), N_TYPES, D)
    q, t, v, types, has = _inputs()
    w0 = fusion.pairwise(q, t, v, types, has).image_weight
    assert torch.allclose(w0, torch.full_like(w0, 0.5))  # zero-initialised query term
    torch.nn.init.normal_(fusion.gate_out.weight)
    w = fusion.pairwise(q, t, v, types, has).image_weight
    assert not torch.allclose(w[0], w[1])  # different queries, different weights for the same product
    tg = Fusion(FusionConfig(mode="type_gate"), N_TYPES, D)
    with torch.no_grad():
        tg.type_logit.copy_(torch.tensor([-2.0, -1.0, 1.0, 2.0]))
    wt = tg.pairwise(q, t, v, types, has).image_weight
    assert torch.allclose(wt[0], wt[1])  # query-independent
    assert torch.allclose(wt[0], torch.sigmoid(tg.type_logit[types]))


@pytest.mark.parametrize("offset", [False, True])
def test_index_vectors_match_type_gate_scores(offset):
    tg = Fusion(FusionConfig(mode="type_gate", image_score_offset=offset), N_TYPES, D)
    with torch.no_grad():
        tg.type_logit.copy_(torch.tensor([-2.0, -1.0, 1.0, 2.0]))
        if offset:
            tg.image_offset.fill_(0.3)
    q, t, v, types, has = _inputs()
    has[1] = False
    p = tg.index_vectors(t, v, types, has)
    assert p.shape == (5, D + offset)
    assert torch.allclose(tg.index_queries(q) @ p.T, tg.pairwise(q, t, v, types, has).scores, atol=1e-5)
    assert torch.allclose(p[:, :D].norm(dim=-1), torch.ones(5), atol=1e-5)


def test_image_score_offset_shifts_by_the_image_weight_only_in_gated_modes():
    q, t, v, types, has = _inputs()
    for mode in ("type_gate", "query_type_gate"):
        assert Fusion(FusionConfig(mode=mode), N_TYPES, D).image_offset is None  # off by default
        fusion = Fusion(FusionConfig(mode=mode, image_score_offset=True), N_TYPES, D)
        assert fusion.image_offset is not None and any(p is fusion.image_offset for p in fusion.gate_parameters())
        base = fusion.pairwise(q, t, v, types, has)
        with torch.no_grad():
            fusion.image_offset.fill_(0.2)
        shifted = fusion.pairwise(q, t, v, types, has)
        assert torch.allclose(shifted.scores - base.scores, 0.2 * base.image_weight, atol=1e-6)
        shifted.scores.sum().backward()
        assert fusion.image_offset.grad is not None and fusion.image_offset.grad != 0
    for mode in ("title", "image", "mean", "concat"):
        assert Fusion(FusionConfig(mode=mode, image_score_offset=True), N_TYPES, D).image_offset is None


def test_unknown_mode_rejected():
    with pytest.raises(ValueError):
        FusionConfig(mode="attention")
