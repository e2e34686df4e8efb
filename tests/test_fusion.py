"""Fusion modes: shapes, gate range, the fused score's formula, missing images, gradients, pairwise == paired,
index vectors, parameter layout."""

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


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_pairwise_matches_paired(mode):
    torch.manual_seed(0)
    fusion = Fusion(FusionConfig(mode=mode), N_TYPES, D)
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


@pytest.mark.parametrize("mode", ["mean", "type_gate", "query_type_gate"])
def test_fused_score_is_the_cosine_of_the_fused_vector(mode):
    # score_ij = cos(q_i, normalize((1 - w_ij) t_j + w_ij v_j)), with w the returned image weight, in every path.
    torch.manual_seed(0)
    fusion = Fusion(FusionConfig(mode=mode), N_TYPES, D)
    if hasattr(fusion, "gate_out"):  # a query-dependent gate
        torch.nn.init.normal_(fusion.gate_out.weight, std=2.0)
    if hasattr(fusion, "type_logit"):
        with torch.no_grad():
            fusion.type_logit.copy_(torch.tensor([-2.0, -0.5, 1.0, 2.0]))
    q, t, v, types, has = _inputs(3, 5, seed=1)
    has[3] = False
    v = v * has.unsqueeze(-1)
    out = fusion.pairwise(q, t, v, types, has)
    w = out.image_weight.unsqueeze(-1)  # (Bq, Bp, 1)
    p = F.normalize((1 - w) * t.unsqueeze(0) + w * v.unsqueeze(0), dim=-1)  # (Bq, Bp, D)
    expected = (q.unsqueeze(1) * p).sum(-1)  # (Bq, Bp)
    assert torch.allclose(out.scores, expected, atol=1e-5)
    parts = fusion.combine(q @ t.T, q @ v.T, (t * v).sum(-1).unsqueeze(0), out.image_weight)
    assert torch.equal(parts, out.scores)  # the re-scoring helper is the model's own formula
    if mode == "query_type_gate":
        assert not torch.allclose(out.image_weight[0], out.image_weight[1])  # the test exercises the query term


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
def test_gradients_reach_gate_and_inputs(mode):
    fusion = Fusion(FusionConfig(mode=mode), N_TYPES, D)
    q, t, v, types, has = _inputs()
    q.requires_grad_(True)
    t.requires_grad_(True)
    v.requires_grad_(True)
    fusion.pairwise(q, t, v, types, has).scores.sum().backward()
    assert q.grad.abs().sum() > 0 and t.grad.abs().sum() > 0 and v.grad.abs().sum() > 0
    trainable = [p for p in fusion.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert trainable, "no fusion parameter received a gradient"
    if mode != "concat":
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


def test_index_vectors_match_type_gate_scores():
    tg = Fusion(FusionConfig(mode="type_gate"), N_TYPES, D)
    with torch.no_grad():
        tg.type_logit.copy_(torch.tensor([-2.0, -1.0, 1.0, 2.0]))
    q, t, v, types, has = _inputs()
    has[1] = False
    p = tg.index_vectors(t, v, types, has)
    assert p.shape == (5, D)
    assert torch.allclose(q @ p.T, tg.pairwise(q, t, v, types, has).scores, atol=1e-5)
    assert torch.allclose(p.norm(dim=-1), torch.ones(5), atol=1e-5)


@pytest.mark.parametrize(
    ("mode", "names"),
    [
        ("title", []),
        ("mean", []),
        ("type_gate", ["type_logit"]),
        (
            "query_type_gate",
            [
                "type_logit",
                "gate_type_embed.weight",
                "gate_q.weight",
                "gate_q.bias",
                "gate_p.weight",
                "gate_out.weight",
                "gate_out.bias",
            ],
        ),
        ("concat", ["concat_mlp.0.weight", "concat_mlp.0.bias", "concat_mlp.2.weight", "concat_mlp.2.bias"]),
    ],
)
def test_parameters_and_their_order(mode, names):
    # Creation order decides what a seeded init draws: checkpoints and the demo's numbers depend on it.
    fusion = Fusion(FusionConfig(mode=mode), N_TYPES, D)
    assert [n for n, _ in fusion.named_parameters()] == names
    if names and names[0] == "type_logit":
        assert [id(p) for p in fusion.gate_parameters()] == [id(fusion.type_logit)]
    expected_net = [n for n in names if n.startswith(("gate_type_embed", "gate_q", "gate_p", "gate_out"))]
    by_id = {id(p): n for n, p in fusion.named_parameters()}
    assert [by_id[id(p)] for p in fusion.gate_network_parameters()] == expected_net
    if mode == "query_type_gate":
        assert fusion.gate_p.weight.shape == (FusionConfig().hidden_dim, FusionConfig().type_embed_dim)


def test_unknown_mode_rejected():
    with pytest.raises(ValueError):
        FusionConfig(mode="attention")


def test_pairwise_gate_runs_per_type_and_equals_the_per_product_network():
    """The pairwise gate evaluates its network once per (query, type) and gathers it to the products; values and
    gradients equal the network run on every (query, product) pair."""
    torch.manual_seed(0)
    fusion = Fusion(FusionConfig(mode="query_type_gate"), N_TYPES, D)
    torch.nn.init.normal_(fusion.gate_out.weight)
    q, t, v, _, has = _inputs(6, 9, seed=3)
    types = torch.tensor([3, 1, 3, 3, 1, 1, 3, 1, 3])  # two of the four types: column positions != type ids
    has[2] = False
    w = fusion.image_weight(q, t, v, types, has, pairwise=True)  # (6, 9)
    ph = fusion.gate_p(fusion.gate_type_embed(types))  # (9, H): the per-product form
    h = torch.relu(fusion.gate_q(q).unsqueeze(1) + ph.unsqueeze(0))  # (6, 9, H)
    ref = torch.sigmoid(fusion.type_logit[types].unsqueeze(0) + fusion.gate_out(h).squeeze(-1)) * has.float()
    assert torch.allclose(w, ref, atol=1e-6)
    params = [fusion.gate_q.weight, fusion.gate_p.weight, fusion.gate_out.weight, fusion.type_logit]
    grads = torch.autograd.grad((w * torch.arange(54.0).view(6, 9)).sum(), params)
    ref_grads = torch.autograd.grad((ref * torch.arange(54.0).view(6, 9)).sum(), params)
    for g, r in zip(grads, ref_grads, strict=True):
        assert torch.allclose(g, r, atol=1e-5)


@pytest.mark.parametrize("mode", ["mean", "type_gate", "query_type_gate"])
def test_unnormalised_fusion_is_the_blend_of_the_cosines(mode):
    # normalize=False: score = (1 - w) q.t + w q.v with the same w, in every path (pairwise, paired, one query).
    torch.manual_seed(0)
    cosine = Fusion(FusionConfig(mode=mode), N_TYPES, D)
    blend = Fusion(FusionConfig(mode=mode, normalize=False), N_TYPES, D)
    if hasattr(cosine, "gate_out"):
        torch.nn.init.normal_(cosine.gate_out.weight, std=2.0)
    blend.load_state_dict(cosine.state_dict())
    q, t, v, types, has = _inputs(3, 5, seed=2)
    has[4] = False
    v = v * has.unsqueeze(-1)
    out = blend.pairwise(q, t, v, types, has)
    ref = cosine.pairwise(q, t, v, types, has)
    assert torch.equal(out.image_weight, ref.image_weight)  # the option changes the score, never the gate
    w = out.image_weight
    assert torch.allclose(out.scores, (1 - w) * (q @ t.T) + w * (q @ v.T), atol=1e-6)
    assert not torch.allclose(out.scores, ref.scores, atol=1e-3)  # the cosine divides by |p|, which varies
    assert torch.allclose(out.scores[:, 4], q @ t[4], atol=1e-6)  # no photo: the title's cosine
    paired = blend.paired(q[:1].expand(5, -1), t, v, types, has).scores
    assert torch.allclose(paired, out.scores[0], atol=1e-6)
    one = blend.one_query(q[0], q[0] @ t.T, q[0] @ v.T, (t * v).sum(-1), types, has).scores
    assert torch.allclose(one, out.scores[0], atol=1e-6)


def test_unnormalised_index_vectors_give_the_type_gate_scores():
    tg = Fusion(FusionConfig(mode="type_gate", normalize=False), N_TYPES, D)
    with torch.no_grad():
        tg.type_logit.copy_(torch.tensor([-2.0, -1.0, 1.0, 2.0]))
    q, t, v, types, has = _inputs()
    has[1] = False
    p = tg.index_vectors(t, v, types, has)
    assert torch.allclose(q @ p.T, tg.pairwise(q, t, v, types, has).scores, atol=1e-6)
    assert torch.allclose(p[1], t[1])  # no photo: the title vector itself
    assert (p.norm(dim=-1) <= 1 + 1e-6).all()  # a blend of unit vectors, shorter where t and v disagree
