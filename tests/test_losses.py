"""Contrastive losses: known values, masks (a masked negative has no effect), sigmoid variant, term switches."""

import math

import pytest
import torch

from querylife.losses import LossConfig, info_nce, sigmoid_pairwise, similarity_loss


def test_info_nce_value_matches_hand_computation():
    sim = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    scale = torch.tensor(10.0)
    row0 = -math.log(math.exp(9) / (math.exp(9) + math.exp(1)))
    row1 = -math.log(math.exp(8) / (math.exp(8) + math.exp(2)))
    col0 = -math.log(math.exp(9) / (math.exp(9) + math.exp(2)))
    col1 = -math.log(math.exp(8) / (math.exp(8) + math.exp(1)))
    expected = ((row0 + row1) / 2 + (col0 + col1) / 2) / 2
    assert info_nce(sim, scale).item() == pytest.approx(expected, rel=1e-4)
    assert info_nce(sim, scale, symmetric=False).item() == pytest.approx((row0 + row1) / 2, rel=1e-4)


@pytest.mark.parametrize("kind", ["infonce", "sigmoid"])
def test_masked_negative_has_no_effect(kind):
    torch.manual_seed(0)
    sim = torch.randn(5, 5).tanh().requires_grad_(True)
    mask = torch.zeros(5, 5, dtype=torch.bool)
    mask[1, 3] = True
    mask[0, 0] = True  # the diagonal is never masked, even if asked
    scale, bias = torch.tensor(7.0), torch.tensor(-2.0)

    def loss(s):
        return info_nce(s, scale, mask) if kind == "infonce" else sigmoid_pairwise(s, scale, bias, mask)

    base = loss(sim)
    base.backward()
    assert sim.grad[1, 3] == 0  # no gradient through the masked entry
    assert sim.grad[0, 0] != 0
    changed = sim.detach().clone()
    changed[1, 3] = 0.99  # make the masked negative look like a strong match: the loss must not move
    assert loss(changed).item() == pytest.approx(base.item(), abs=1e-6)
    unmasked = info_nce(changed, scale) if kind == "infonce" else sigmoid_pairwise(changed, scale, bias)
    assert unmasked.item() > base.item()  # without the mask the same change raises the loss


def test_mask_lowers_loss_for_a_false_negative():
    sim = torch.tensor([[0.9, 0.9], [0.1, 0.9]])
    scale = torch.tensor(10.0)
    mask = torch.tensor([[False, True], [False, False]])
    assert info_nce(sim, scale, mask).item() < info_nce(sim, scale).item()


def test_similarity_loss_terms_switch_off():
    torch.manual_seed(0)
    sims = {k: torch.randn(4, 4).tanh() for k in ("query_fused", "query_title", "query_image", "title_image")}
    scale = torch.tensor(10.0)
    out = similarity_loss(sims, LossConfig(), scale)
    assert set(out.parts) == {"query_fused", "query_title", "query_image", "title_image", "total"}
    expected = out.parts["query_fused"] + 0.25 * (
        out.parts["query_title"] + out.parts["query_image"] + out.parts["title_image"]
    )
    assert out.total.item() == pytest.approx(expected, rel=1e-5)
    only = similarity_loss(sims, LossConfig(query_title=0, query_image=0, title_image=0), scale)
    assert set(only.parts) == {"query_fused", "total"}
    assert only.total.item() == pytest.approx(info_nce(sims["query_fused"], scale).item(), rel=1e-6)
    sig = similarity_loss(sims, LossConfig(kind="sigmoid"), scale, torch.tensor(-3.0))
    assert torch.isfinite(sig.total)


def test_bad_loss_config_rejected():
    with pytest.raises(ValueError):
        LossConfig(kind="triplet")
    with pytest.raises(ValueError):
        LossConfig(query_title=-1)
    with pytest.raises(ValueError):
        LossConfig(unknown_key=1)
    with pytest.raises(ValueError):
        info_nce(torch.zeros(3, 2), torch.tensor(1.0))


def test_extra_positive_matches_supcon_hand_computation():
    """A flagged column counts as a positive: the row's loss averages -log p over its positives (SupCon L_out)."""
    sim = torch.tensor([[0.9, 0.7, 0.1], [0.2, 0.8, 0.3]])
    scale = torch.tensor(10.0)
    extra = torch.tensor([[False, True, False], [False, False, False]])
    lse0 = math.log(math.exp(9) + math.exp(7) + math.exp(1))
    lse1 = math.log(math.exp(2) + math.exp(8) + math.exp(3))
    row0 = ((lse0 - 9) + (lse0 - 7)) / 2
    row1 = lse1 - 8
    assert info_nce(sim, scale, symmetric=False, extra_positive=extra).item() == pytest.approx(
        (row0 + row1) / 2, rel=1e-5
    )
    # the product -> query direction sees the transposed flags: column 1's positives are rows 1 and 0
    col_lse0 = math.log(math.exp(9) + math.exp(2))
    col_lse1 = math.log(math.exp(7) + math.exp(8))
    col0, col1 = col_lse0 - 9, ((col_lse1 - 8) + (col_lse1 - 7)) / 2
    expected = ((row0 + row1) / 2 + (col0 + col1) / 2) / 2
    assert info_nce(sim, scale, extra_positive=extra).item() == pytest.approx(expected, rel=1e-5)
    # no flags: exactly the plain loss
    none = torch.zeros_like(extra)
    assert info_nce(sim, scale, extra_positive=none).item() == pytest.approx(info_nce(sim, scale).item())


def test_extra_positive_pulls_the_flagged_product_up():
    sim = torch.tensor([[0.9, 0.5], [0.1, 0.8]], requires_grad=True)
    extra = torch.tensor([[False, True], [False, False]])
    info_nce(sim, torch.tensor(10.0), extra_positive=extra).backward()
    assert sim.grad[0, 1] < 0  # gradient descent raises the flagged similarity (as a negative it would fall)
    plain = sim.detach().clone().requires_grad_(True)
    info_nce(plain, torch.tensor(10.0)).backward()
    assert plain.grad[0, 1] > 0


def test_ignored_cell_stays_ignored_even_if_flagged_positive():
    torch.manual_seed(1)
    sim = torch.randn(3, 4).tanh().requires_grad_(True)
    ignore = torch.zeros(3, 4, dtype=torch.bool)
    ignore[0, 2] = True
    extra = ignore.clone()
    extra[1, 3] = True
    loss = info_nce(sim, torch.tensor(5.0), ignore, extra_positive=extra)
    loss.backward()
    assert torch.isfinite(loss) and sim.grad[0, 2] == 0 and sim.grad[1, 3] != 0


def test_sigmoid_extra_positive_gets_positive_label():
    sim = torch.tensor([[0.9, 0.6], [0.1, 0.8]])
    scale, bias = torch.tensor(10.0), torch.tensor(-5.0)
    extra = torch.tensor([[False, True], [False, False]])
    flagged = sigmoid_pairwise(sim, scale, bias, extra_positive=extra)
    manual = sum(
        -math.log(1 / (1 + math.exp(-(y * (s * 10 - 5)))))
        for s, y in ((0.9, 1), (0.6, 1), (0.1, -1), (0.8, 1))
    ) / 2
    assert flagged.item() == pytest.approx(manual, rel=1e-5)


def _embeddings(n_q: int = 4, n_p: int = 6, d: int = 8):
    import torch.nn.functional as F

    from querylife.losses import Embeddings

    g = torch.Generator().manual_seed(0)
    q, t, v = (F.normalize(torch.randn(n, d, generator=g), dim=-1) for n in (n_q, n_p, n_p))
    has = torch.tensor([True, True, False, True, True, True])[:n_p]
    v = v * has.unsqueeze(-1)
    return Embeddings(q.requires_grad_(), t.requires_grad_(), v.requires_grad_(), torch.arange(n_p) % 3, has)


@pytest.mark.parametrize("mode", ["query_type_gate", "mean", "concat"])
def test_alignment_loss_builds_the_similarities_the_model_scores(mode):
    from querylife.fusion import Fusion, FusionConfig
    from querylife.losses import BatchMasks, alignment_loss, term_similarities

    torch.manual_seed(0)
    fusion = Fusion(FusionConfig(mode=mode), n_types=3, dim=8)
    emb = _embeddings()
    ignore = torch.zeros(4, 6, dtype=torch.bool)
    ignore[0, 3] = True
    masks = BatchMasks(ignore=ignore, product_ignore=torch.eye(6, dtype=torch.bool))
    cfg, scale = LossConfig(), torch.tensor(10.0)
    fused = fusion.pairwise(emb.q, emb.t, emb.v, emb.type_ids, emb.has_image).scores
    sims = {"query_fused": fused, "query_title": emb.q @ emb.t.T, "query_image": emb.q @ emb.v.T,
            "title_image": emb.t @ emb.v.T}
    expected = similarity_loss(sims, cfg, scale, None, ignore, masks.product_ignore)
    got = alignment_loss(emb, masks, cfg, fusion, scale)
    assert got.parts == expected.parts and torch.equal(got.total, expected.total)
    # Terms with weight 0 are not even computed.
    assert set(term_similarities(emb, LossConfig(query_title=0, title_image=0), fusion)) == {"query_fused",
                                                                                              "query_image"}


def test_gather_features_is_the_identity_in_one_process():
    from querylife.losses import all_gather_rows, gather_features

    emb = _embeddings()
    assert gather_features(emb) is emb
    assert all_gather_rows(emb.t) is emb.t


def _rank_embeddings(rank: int):
    from querylife.losses import Embeddings

    g = torch.Generator().manual_seed(rank)
    q, t, v = (torch.randn(n, 4, generator=g).requires_grad_() for n in (2, 3, 3))
    return Embeddings(q, t, v, torch.full((3,), rank), torch.tensor([True, rank == 0, True]))


def _gather_worker(rank: int, world: int, rendezvous: str, out: str) -> None:
    import json

    import torch.distributed as dist

    from querylife.losses import gather_features

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    result = {}
    for with_grad in (True, False):
        emb = _rank_embeddings(rank)
        got = gather_features(emb, gather_with_grad=with_grad)
        (got.q @ got.t.T).sum().backward()  # this rank's loss rows against every rank's products
        result[str(with_grad)] = {
            "q_is_local": got.q is emb.q,
            "t": got.t.tolist(),
            "type_ids": got.type_ids.tolist(),
            "has_image": got.has_image.tolist(),
            "t_grad": emb.t.grad.tolist(),
        }
    result["all_q"] = gather_features(_rank_embeddings(rank), local_loss=False).q.tolist()
    dist.destroy_process_group()
    with open(f"{out}.{rank}", "w") as f:
        json.dump(result, f)


@pytest.mark.slow
def test_gather_features_with_two_gloo_ranks(tmp_path):
    import json

    import torch.multiprocessing as mp

    mp.spawn(_gather_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path / "out")), nprocs=2)
    embs = [_rank_embeddings(r) for r in range(2)]
    all_t = torch.cat([e.t for e in embs]).detach()
    q_sum = [e.q.detach().sum(0) for e in embs]

    def close(got, expected) -> bool:
        return torch.allclose(torch.tensor(got), expected, atol=1e-5)

    for rank in range(2):
        got = json.loads((tmp_path / f"out.{rank}").read_text())
        for with_grad in ("True", "False"):
            g = got[with_grad]
            assert g["q_is_local"] and close(g["t"], all_t)
            assert g["type_ids"] == [0, 0, 0, 1, 1, 1] and g["has_image"] == [True, True, True, True, False, True]
        # With gradients, each rank's products get the gradient of every rank's loss (as one process with the
        # combined batch would); without, only their own rank's.
        assert close(got["True"]["t_grad"], (q_sum[0] + q_sum[1]).expand(3, -1))
        assert close(got["False"]["t_grad"], q_sum[rank].expand(3, -1))
        assert close(got["all_q"], torch.cat([e.q for e in embs]).detach())
