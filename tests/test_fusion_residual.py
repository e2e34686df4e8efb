"""``query_type_gate_residual`` (issue 14's "gate over concatenated features", a measurement mode): the closed form
equals the cosine with the materialised ``p_ij = (1 - w) t + w v + r``, pairwise row == paired, a zero residual is
exactly ``query_type_gate``, gradients reach the residual MLP, the optimiser groups, serving raises."""

import pytest
import torch
import torch.nn.functional as F

from querylife.fusion import Fusion, FusionConfig

D, N_TYPES = 8, 4
MODE = "query_type_gate_residual"


def _inputs(bq=3, bp=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(bq, D, generator=g), dim=-1)  # (Bq, D)
    t = F.normalize(torch.randn(bp, D, generator=g), dim=-1)  # (Bp, D)
    has = torch.ones(bp, dtype=torch.bool)
    has[1] = False
    v = F.normalize(torch.randn(bp, D, generator=g), dim=-1) * has.unsqueeze(-1)  # (Bp, D), zero without image
    types = torch.randint(0, N_TYPES, (bp,), generator=g)
    return q, t, v, types, has


def _randomised(seed=0) -> Fusion:
    torch.manual_seed(seed)
    fusion = Fusion(FusionConfig(mode=MODE), N_TYPES, D)
    with torch.no_grad():  # non-trivial gate and residual (their zero-initialised outputs would hide errors)
        for p in fusion.parameters():
            p.normal_(0, 0.5)
    return fusion


def test_score_is_cosine_with_materialised_p():
    fusion = _randomised()
    q, t, v, types, has = _inputs()
    with torch.no_grad():
        out = fusion.pairwise(q, t, v, types, has)
        w = out.image_weight  # (Bq, Bp)
        r = fusion.residual_vectors(t, v, has)  # (Bp, D)
        assert r.abs().max() > 0.1  # the residual is not negligible in this check
        p = (1 - w).unsqueeze(-1) * t + w.unsqueeze(-1) * v + r  # (Bq, Bp, D)
        ref = F.cosine_similarity(q.unsqueeze(1), p, dim=-1)  # (Bq, Bp)
    torch.testing.assert_close(out.scores, ref, atol=1e-5, rtol=0)
    assert bool((w[:, ~has] == 0).all())


def test_pairwise_row_equals_paired():
    fusion = _randomised(1).eval()
    q, t, v, types, has = _inputs(2, 10, seed=1)
    with torch.no_grad():
        full = fusion.pairwise(q, t, v, types, has)
        for i in range(q.shape[0]):
            ref = fusion.paired(q[i].expand(t.shape[0], -1), t, v, types, has)
            torch.testing.assert_close(full.scores[i], ref.scores, atol=1e-6, rtol=0)
            torch.testing.assert_close(full.image_weight[i], ref.image_weight, atol=1e-6, rtol=0)


def test_zero_residual_is_exactly_query_type_gate():
    torch.manual_seed(0)
    gate = Fusion(FusionConfig(mode="query_type_gate"), N_TYPES, D)
    torch.manual_seed(0)
    res = Fusion(FusionConfig(mode=MODE), N_TYPES, D)
    with torch.no_grad():  # the same non-trivial gate in both; the residual keeps its zero-initialised output
        for name, p in gate.named_parameters():
            p.normal_(0, 0.5)
            dict(res.named_parameters())[name].copy_(p)
    assert float(res.residual_mlp[2].weight.detach().abs().sum()) == 0.0
    q, t, v, types, has = _inputs()
    with torch.no_grad():
        a, b = gate.pairwise(q, t, v, types, has), res.pairwise(q, t, v, types, has)
        c, d = gate.paired(q, t[:3], v[:3], types[:3], has[:3]), res.paired(q, t[:3], v[:3], types[:3], has[:3])
    torch.testing.assert_close(b.scores, a.scores, atol=1e-7, rtol=0)
    torch.testing.assert_close(b.image_weight, a.image_weight, atol=0, rtol=0)
    torch.testing.assert_close(d.scores, c.scores, atol=1e-7, rtol=0)


def test_gradients_reach_the_residual_mlp_and_the_gate():
    fusion = Fusion(FusionConfig(mode=MODE), N_TYPES, D)  # zero-initialised: the output layer still gets gradient
    q, t, v, types, has = _inputs()
    fusion.pairwise(q, t, v, types, has).scores.logsumexp(-1).sum().backward()
    last = fusion.residual_mlp[2]
    assert last.weight.grad is not None and float(last.weight.grad.abs().sum()) > 0
    assert float(last.bias.grad.abs().sum()) > 0
    assert float(fusion.type_logit.grad.abs().sum()) > 0
    # one more step moves r off zero, so the earlier layers get gradient too
    with torch.no_grad():
        last.weight.add_(0.1 * torch.randn_like(last.weight))
    fusion.zero_grad()
    fusion.paired(q, t[:3], v[:3], types[:3], has[:3]).scores.sum().backward()
    assert float(fusion.residual_mlp[0].weight.grad.abs().sum()) > 0


def test_residual_mlp_is_trained_like_concat_mlp_not_held_with_the_gate(tiny_text_model_dir):
    from querylife.model import ModelConfig, QueryLifeModel
    from querylife.towers import SmallCNNConfig, TowerConfig

    tower = TowerConfig(text_model=str(tiny_text_model_dir), small_cnn=SmallCNNConfig(channels=(8, 16), image_size=32))
    model = QueryLifeModel(
        ModelConfig(tower=tower, embed_dim=16, product_types=["dress", "charger"], fusion=FusionConfig(mode=MODE))
    )
    groups = {g["name"]: {id(p) for p in g["params"]} for g in model.parameter_groups(1e-3, 0.01, 10.0)}
    res = model.fusion.residual_mlp
    assert {id(res[0].weight), id(res[2].weight)} <= groups["decay"]  # as concat_mlp: decay / no_decay, never held
    assert {id(res[0].bias), id(res[2].bias)} <= groups["no_decay"]
    assert not {id(p) for p in res.parameters()} & (groups["gate"] | groups["gate_net"])
    assert id(model.fusion.gate_out.weight) in groups["gate_net"]
    assert groups["gate"] == {id(model.fusion.type_logit)}


@pytest.mark.parametrize("call", ["one_query", "index_vectors", "type_weights"])
def test_serving_paths_raise(call):
    fusion = Fusion(FusionConfig(mode=MODE), N_TYPES, D)
    q, t, v, types, has = _inputs()
    args = {
        "one_query": (q[0], t @ q[0], v @ q[0], (t * v).sum(-1), types, has),
        "index_vectors": (t, v, types, has),
        "type_weights": (q,),
    }[call]
    with pytest.raises(NotImplementedError, match="measurement mode: serving not implemented"):
        getattr(fusion, call)(*args)
