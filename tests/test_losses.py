"""Contrastive losses: known values, masks (a masked negative has no effect), sigmoid variant, term switches."""

import math

import pytest
import torch

from querylife.losses import LossConfig, alignment_loss, info_nce, sigmoid_pairwise


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


def test_alignment_loss_terms_switch_off():
    torch.manual_seed(0)
    sims = {k: torch.randn(4, 4).tanh() for k in ("query_fused", "query_title", "query_image", "title_image")}
    scale = torch.tensor(10.0)
    out = alignment_loss(sims, LossConfig(), scale)
    assert set(out.parts) == {"query_fused", "query_title", "query_image", "title_image", "total"}
    expected = out.parts["query_fused"] + 0.25 * (
        out.parts["query_title"] + out.parts["query_image"] + out.parts["title_image"]
    )
    assert out.total.item() == pytest.approx(expected, rel=1e-5)
    only = alignment_loss(sims, LossConfig(query_title=0, query_image=0, title_image=0), scale)
    assert set(only.parts) == {"query_fused", "total"}
    assert only.total.item() == pytest.approx(info_nce(sims["query_fused"], scale).item(), rel=1e-6)
    sig = alignment_loss(sims, LossConfig(kind="sigmoid"), scale, torch.tensor(-3.0))
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
