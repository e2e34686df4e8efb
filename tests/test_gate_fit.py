"""dev_type_gate: it trains exactly as mean fusion, then picks each type's image weight on dev; the selection rule
that keeps a gated mode's checkpoint after the gate started."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from querylife.config import with_overrides
from querylife.data.prepare import prepare_dataset
from querylife.gate_fit import PairParts, fit_type_weights, set_type_weights
from querylife.model import QueryLifeModel
from querylife.scoring import score_pairs
from querylife.train import Trainer, TrainState


@pytest.fixture(scope="module")
def tiny_data(tiny_store):
    return prepare_dataset(tiny_store.catalog_path, tiny_store.pairs_path, image_size=32, progress=False)


def test_dev_type_gate_trains_exactly_as_mean_then_fits_on_dev(tiny_config, tiny_data, tmp_path):
    mean = Trainer(
        with_overrides(tiny_config, {"model.fusion.mode": "mean"}), tiny_data, tmp_path / "m", progress=False
    )
    dtg_cfg = with_overrides(tiny_config, {"model.fusion.mode": "dev_type_gate"})
    dtg = Trainer(dtg_cfg, tiny_data, tmp_path / "d", progress=False)
    assert not dtg.model.fusion.type_logit.requires_grad  # never in the optimiser: training is mean fusion's
    a, b = mean.fit(), dtg.fit()
    assert a.best_epoch == b.best_epoch and a.best_dev_ndcg == b.best_dev_ndcg
    sa, sb = a.model.trainable_state_dict(), b.model.trainable_state_dict()
    assert set(sb) - set(sa) == {"fusion.type_logit"}
    for k, v in sa.items():
        if k == "query_offset.strength":  # chosen on dev from the fused scores, which the type weights move
            continue
        assert torch.equal(v, sb[k]), k
    fit = b.type_weights
    assert fit is not None and fit.dev_ndcg_after >= fit.dev_ndcg_before
    assert set(fit.weights) == set(b.model.types)
    w = torch.sigmoid(b.model.fusion.type_logit.detach())
    for i, t in enumerate(b.model.types):
        assert abs(float(w[i]) - fit.weights[t]) < 1e-5
    # best/ holds the fitted weights: reloading scores as the returned model does
    summary = json.loads((tmp_path / "d" / "best" / "summary.json").read_text())
    assert summary["type_weights"]["weights"] == fit.weights
    dev = tiny_data.splits["dev"]
    reloaded = QueryLifeModel.from_pretrained(tmp_path / "d" / "best")
    assert np.allclose(
        score_pairs(reloaded, tiny_data, dev).score, score_pairs(b.model, tiny_data, dev).score, atol=1e-5
    )


def _synthetic_parts(n_queries=30, per_query=6, seed=0):
    """Type 1 (rows of even queries): only the title tells positives apart; type 2: only the image does."""
    rng = np.random.default_rng(seed)
    rows, st, sv, types = [], [], [], []
    for qi in range(n_queries):
        kind = 1 + qi % 2
        for j in range(per_query):
            pos = j == 0
            signal = 0.6 if pos else 0.2 + 0.05 * rng.standard_normal()
            noise = 0.4 + 0.3 * rng.standard_normal()
            st.append(signal if kind == 1 else noise)
            sv.append(noise if kind == 1 else signal)
            types.append(kind)
            rows.append({"query": f"q{qi}", "gain": 2 if pos else 0, "positive": pos})
    n = len(rows)
    parts = PairParts(
        torch.tensor(st), torch.tensor(sv), torch.zeros(n), torch.tensor(types), torch.ones(n, dtype=torch.bool)
    )
    return pd.DataFrame(rows), parts


def test_fit_follows_the_modality_that_ranks_within_each_type(tiny_config):
    cfg = with_overrides(tiny_config, {"model.fusion.mode": "dev_type_gate"}).model
    model = QueryLifeModel(cfg.model_copy(update={"product_types": ["title_kind", "image_kind"]}))
    dev, parts = _synthetic_parts()
    fit = fit_type_weights(model, None, dev, parts=parts)
    assert fit.weights["title_kind"] < 0.5 < fit.weights["image_kind"]
    assert fit.weights["<unk>"] == 0.5  # no dev candidates: the init stays
    assert fit.dev_ndcg_after > fit.dev_ndcg_before
    assert [m["type"] for m in fit.moves]  # the moves are recorded


def test_fit_needs_a_type_gate_and_a_dev_split(tiny_config):
    mean = QueryLifeModel(with_overrides(tiny_config, {"model.fusion.mode": "mean"}).model)
    dev, parts = _synthetic_parts(4)
    with pytest.raises(ValueError, match="no per-type image weights"):
        fit_type_weights(mean, None, dev, parts=parts)
    gate = QueryLifeModel(with_overrides(tiny_config, {"model.fusion.mode": "dev_type_gate"}).model)
    with pytest.raises(ValueError, match="non-empty dev"):
        fit_type_weights(gate, None, dev.iloc[:0], parts=parts)
    with pytest.raises(ValueError, match="fit_grid"):
        fit_type_weights(gate, None, dev, parts=parts, grid=[0.0, 1.5])


def test_set_type_weights_round_trips(tiny_config):
    model = QueryLifeModel(with_overrides(tiny_config, {"model.fusion.mode": "dev_type_gate"}).model)
    n = model.fusion.type_logit.numel()
    w = torch.linspace(0, 1, n)
    set_type_weights(model, w)
    assert torch.allclose(torch.sigmoid(model.fusion.type_logit.detach()), w, atol=1e-6)


def test_epochs_inside_the_hold_are_neither_best_nor_bad():
    st = TrainState()
    assert not st.observe_dev(0.9, True, patience=1, eligible=False)
    assert st.best_epoch == -1 and st.bad_epochs == 0 and not st.stopped_early
    assert st.observe_dev(0.5, True, patience=1)  # the first eligible epoch is the best so far, whatever its score
    assert st.best_epoch == 2
    assert not st.observe_dev(0.4, True, patience=1) and st.stopped_early


def test_gated_mode_selects_an_epoch_after_the_gate_started(tiny_config, tiny_data, tmp_path):
    cfg = with_overrides(
        tiny_config, {"model.fusion.mode": "query_type_gate", "train.epochs": 2, "train.gate_start_fraction": 0.5}
    )
    result = Trainer(cfg, tiny_data, tmp_path / "g", progress=False).fit()
    assert [h["gate_trained"] for h in result.history] == [False, True]
    assert result.best_epoch == 2
    # The hold ends one step before the first epoch does: that epoch is mean fusion plus one gate step at warm-up
    # learning rate 0, so it must not count as gate-trained (it did, and was selected, in issue 14's CNN runs).
    steps = len(Trainer(cfg, tiny_data, tmp_path / "probe", progress=False).batches)
    assert steps >= 4
    late = with_overrides(cfg, {"train.gate_start_fraction": (steps - 0.5) / (2 * steps), "train.patience": 0})
    trainer = Trainer(late, tiny_data, tmp_path / "late", progress=False)
    assert trainer.hold.start_step == steps - 1 and trainer.min_gate_steps == steps // 2
    result = trainer.fit()
    assert [h["gate_trained"] for h in result.history] == [False, True] and result.best_epoch == 2
    old = with_overrides(cfg, {"train.select_after_gate": False})
    result = Trainer(old, tiny_data, tmp_path / "o", progress=False).fit()
    dev = [h["dev_ndcg@10"] for h in result.history]
    assert result.best_epoch == int(np.argmax(dev)) + 1  # the old rule: the dev-best epoch, inside the hold or not
