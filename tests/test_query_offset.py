"""model.query_offset (the default "top_k", strength "dev"): after training, every score is the fused score minus a
share (the strength, picked on dev) of the mean of the query's k best fused scores over a reference sample of the
catalogue. Rankings never change; training, checkpoints from before the option, mode "none" and strength 0 score
raw; every scoring path (eval pairs, the Searcher) subtracts the same offset."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from querylife.config import with_overrides
from querylife.data.prepare import prepare_dataset
from querylife.model import QueryLifeModel
from querylife.query_offset import fit_query_offset
from querylife.scoring import encode_products, encode_query_vectors, score_pairs
from querylife.train import Trainer


@pytest.fixture(scope="module")
def tiny_data(tiny_store):
    return prepare_dataset(tiny_store.catalog_path, tiny_store.pairs_path, image_size=32, progress=False)


TOP_K = {"model.query_offset.mode": "top_k", "model.query_offset.strength": 1.0}  # the full offset


def _model(tiny_config, data, **changes) -> QueryLifeModel:
    cfg = with_overrides(tiny_config, {**TOP_K, **changes})
    torch.manual_seed(0)
    model = QueryLifeModel(cfg.model.model_copy(update={"product_types": data.product_types}))
    with torch.no_grad():  # a gate that depends on query and type (its trained-from-zero init would not)
        for p in model.fusion.parameters():
            if p.dtype.is_floating_point:
                p.normal_(0.0, 0.5)
    return model.eval()


def _reference_scores(model, data, queries: list[str]) -> torch.Tensor:
    """Raw fused scores (Q, n) of the queries against the whole catalogue, computed without the offset module."""
    pv = encode_products(model, data, np.arange(len(data.catalog)))
    q = encode_query_vectors(model, queries)
    with torch.no_grad():
        return model._fused(q, pv.t, pv.v, pv.type_ids, pv.has_image, pairwise=True).scores


@pytest.mark.parametrize("mode", ["query_type_gate", "concat", "mean"])
def test_offset_is_the_mean_of_the_k_best_reference_scores_and_keeps_rankings(tiny_config, tiny_data, mode):
    model = _model(tiny_config, tiny_data, **{"model.fusion.mode": mode, "model.query_offset.k": 5})
    test = tiny_data.splits["test"]
    raw = score_pairs(model, tiny_data, test).score
    fit = fit_query_offset(model, tiny_data)
    assert (fit.products, fit.catalogue, fit.k) == (len(tiny_data.catalog), len(tiny_data.catalog), 5)
    shifted = score_pairs(model, tiny_data, test).score
    queries = list(dict.fromkeys(test["query"]))
    expected = _reference_scores(model, tiny_data, queries).topk(5, dim=1).values.mean(1).double().numpy()  # (Q,)
    per_query = dict(zip(queries, expected, strict=True))
    want = raw - test["query"].map(per_query).to_numpy()
    np.testing.assert_allclose(shifted, want, atol=2e-5)
    assert not np.allclose(shifted, raw, atol=1e-3)  # the offsets are not zero
    for rows in test.groupby("query").indices.values():  # one shift per query: its order is the same
        assert np.ptp(raw[rows] - shifted[rows]) < 1e-5


def test_pairwise_paired_and_searcher_subtract_the_same_offset(tiny_config, tiny_data):
    from querylife.search import Searcher
    from querylife.store import StoredProducts

    model = _model(tiny_config, tiny_data)
    fit_query_offset(model, tiny_data)
    pv = encode_products(model, tiny_data, np.arange(len(tiny_data.catalog)))
    q = encode_query_vectors(model, ["red dress", "wool scarf", "red dress"])
    with torch.no_grad():
        pair = model.score(q, pv.t, pv.v, pv.type_ids, pv.has_image, pairwise=True).scores  # (3, n)
        raw = model._fused(q, pv.t, pv.v, pv.type_ids, pv.has_image, pairwise=True).scores
        off = model.offsets(q)
        rows = torch.arange(len(tiny_data.catalog))
        paired = model.score(q[1].expand(len(rows), -1), pv.t, pv.v, pv.type_ids, pv.has_image, pairwise=False)
    assert torch.allclose(pair, raw - off.unsqueeze(1), atol=1e-6)
    assert torch.allclose(pair[0], pair[2]) and off[0] == off[2]
    assert torch.allclose(paired.scores, pair[1], atol=1e-5)
    cat = tiny_data.catalog
    index_vectors = model.fusion.index_vectors(pv.t, pv.v, pv.type_ids, pv.has_image)
    stored = StoredProducts(product_ids=cat["product_id"].tolist(), titles=cat["title"].tolist(),
                            product_types=cat["product_type"].tolist(), t=pv.t, v=pv.v,
                            has_image=pv.has_image.bool(), type_ids=pv.type_ids,
                            index_vectors=index_vectors)  # fmt: skip
    rel = Searcher(model, stored).score_vectors(q[1], stored)
    np.testing.assert_allclose(rel.scores, pair[1].numpy(), atol=1e-5)


def test_training_never_sees_the_offset(tiny_config, tiny_data, tmp_path):
    off = Trainer(with_overrides(tiny_config, TOP_K), tiny_data, tmp_path / "offset", progress=False).fit()
    raw_cfg = with_overrides(tiny_config, {"model.query_offset.mode": "none"})  # no offset module at all
    raw = Trainer(raw_cfg, tiny_data, tmp_path / "raw", progress=False).fit()
    drop = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert off.best_epoch == raw.best_epoch and drop(off.history) == drop(raw.history)  # the same training
    assert raw.query_offset is None and off.query_offset is not None and off.query_offset.products > 0
    sa, sb = raw.model.trainable_state_dict(), off.model.trainable_state_dict()
    names = ("t", "v", "stv", "type", "has", "valid")
    assert {k for k in sb if k not in sa} == {f"query_offset.ref_{n}" for n in names} | {"query_offset.strength"}
    for k, v in sa.items():
        assert torch.equal(v, sb[k]), k
    summary = json.loads((tmp_path / "offset" / "best" / "summary.json").read_text())
    assert summary["query_offset"]["products"] == off.query_offset.products
    # the saved best/ checkpoint carries the fitted reference: a reload scores as the trained model does
    test = tiny_data.splits["test"]
    reloaded = QueryLifeModel.from_pretrained(tmp_path / "offset" / "best")
    assert reloaded.query_offset.ready
    np.testing.assert_allclose(score_pairs(reloaded, tiny_data, test).score,
                               score_pairs(off.model, tiny_data, test).score, atol=1e-5)  # fmt: skip
    # the offset does not move the training forward pass (what the loss compares)
    model = off.model
    model.train()
    assert model.offsets(encode_query_vectors(model, ["red dress"])) is None
    model.eval()


def test_reference_sample_is_seeded_and_bounded(tiny_config, tiny_data):
    model = _model(tiny_config, tiny_data, **{"model.query_offset.reference_size": 16})
    fit = fit_query_offset(model, tiny_data, seed=3)
    assert (fit.products, fit.catalogue) == (16, len(tiny_data.catalog))
    first = model.query_offset.ref_t.clone()
    assert int(model.query_offset.ref_valid.sum()) == 16
    fit_query_offset(model, tiny_data, seed=3)
    assert torch.equal(first, model.query_offset.ref_t)
    fit_query_offset(model, tiny_data, seed=4)
    assert not torch.equal(first, model.query_offset.ref_t)


def test_small_catalogues_use_the_rows_they_have(tiny_config, tiny_data):
    model = _model(tiny_config, tiny_data, **{"model.query_offset.k": 1000})  # k above the catalogue's size
    fit = fit_query_offset(model, tiny_data)
    assert fit.k == len(tiny_data.catalog)
    q = encode_query_vectors(model, ["red dress"])
    expected = _reference_scores(model, tiny_data, ["red dress"]).mean(1)  # every product: the mean score
    assert torch.allclose(model.offsets(q), expected, atol=1e-5)


def test_mode_none_and_old_checkpoints_score_raw(tiny_config, tiny_data, tiny_text_model_dir, tmp_path):
    from store_helpers import make_checkpoint

    from querylife.query_offset import QueryOffsetConfig

    # the default keeps a reference and picks the strength on dev (0, raw scores, where the level is evidence)
    assert (QueryOffsetConfig().mode, QueryOffsetConfig().strength) == ("top_k", "dev")
    default = QueryLifeModel(tiny_config.model.model_copy(update={"product_types": tiny_data.product_types}))
    assert default.query_offset.config.strength == "dev"

    plain = _model(tiny_config, tiny_data, **{"model.query_offset.mode": "none"})
    assert not hasattr(plain, "query_offset") and plain.offsets(encode_query_vectors(plain, ["x"])) is None
    with pytest.raises(ValueError, match="query_offset"):
        fit_query_offset(plain, tiny_data)
    path = make_checkpoint(tiny_text_model_dir, tmp_path / "old", tiny_data.product_types)
    tree = json.loads((path / "config.json").read_text())
    del tree["query_offset"]  # written before the option existed
    (path / "config.json").write_text(json.dumps(tree))
    from safetensors.torch import load_file, save_file

    state = {k: v for k, v in load_file(str(path / "model.safetensors")).items() if not k.startswith("query_offset.")}
    save_file(state, str(path / "model.safetensors"))
    old = QueryLifeModel.from_pretrained(path)
    assert old.config.query_offset.mode == "none" and not hasattr(old, "query_offset")


def test_unfitted_offset_is_zero_and_bad_config_is_an_error(tiny_config, tiny_data):
    model = _model(tiny_config, tiny_data)
    assert not model.query_offset.ready
    q = encode_query_vectors(model, ["red dress"])
    assert model.offsets(q) is None
    assert torch.equal(model.query_offset.offsets(q, model.fusion), torch.zeros(1))
    with pytest.raises(ValueError):
        with_overrides(tiny_config, {"model.query_offset.k": 0})
    with pytest.raises(ValueError):
        with_overrides(tiny_config, {"model.query_offset.window": 3})
    for bad in (1.5, -0.1, "train"):
        with pytest.raises(ValueError):
            with_overrides(tiny_config, {"model.query_offset.strength": bad})
    with pytest.raises(ValueError):
        with_overrides(tiny_config, {"model.query_offset.min_gain": -0.01})


def test_a_run_written_before_the_option_resumes(tiny_config, tiny_data, tmp_path):
    # last/ of a run from before model.query_offset has no reference buffers: resuming it is not an error
    from safetensors.torch import load_file, save_file

    from querylife.train import TrainingInterrupted

    cfg = with_overrides(tiny_config, {**TOP_K, "train.save_every_steps": 2, "train.epochs": 2})
    with pytest.raises(TrainingInterrupted):
        Trainer(cfg, tiny_data, tmp_path / "run", progress=False, max_steps=3).fit()
    weights = tmp_path / "run" / "last" / "model.safetensors"
    state = load_file(str(weights))
    assert any(k.startswith("query_offset.") for k in state)
    save_file({k: v for k, v in state.items() if not k.startswith("query_offset.")}, str(weights))
    resumed = Trainer(cfg, tiny_data, tmp_path / "run", progress=False).fit(resume=True)
    assert resumed.query_offset is not None and resumed.model.query_offset.ready
    save_file({k: v for k, v in state.items() if k != "title_proj.weight"}, str(weights))  # a trained weight missing
    with pytest.raises(ValueError, match="does not match"):
        Trainer(cfg, tiny_data, tmp_path / "run", progress=False).fit(resume=True)


DEV = {"model.query_offset.mode": "top_k", "model.query_offset.strength": "dev"}


def _raw_and_offset(model, data, dev):
    """A pairs frame's raw scores (N,) and each row's full offset, computed without the strength machinery."""
    queries = list(dict.fromkeys(dev["query"]))
    full = _reference_scores(model, data, queries).topk(model.query_offset.config.k, dim=1).values.mean(1)  # (Q,)
    offset = dev["query"].map(dict(zip(queries, full.double().numpy(), strict=True))).to_numpy()
    module = model.query_offset
    saved = module.ref_valid.clone()
    module.ref_valid.zero_()
    raw = score_pairs(model, data, dev).score
    module.ref_valid.copy_(saved)
    return raw, offset


def _levels(truth: str, seed: int = 0):
    """Synthetic dev pairs: 40 queries of 2 types, 12 candidates each (8 in type), each query with its own score
    level. ``truth="offset"``: relevance is how far a candidate sits below its query's best (the level is noise);
    ``"raw"``: queries at a high level have the relevant candidates (the level is evidence)."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(40):
        qtype = "a" if q % 2 else "b"
        level = rng.normal(0, 1.0)  # (the query's offset)
        for c in range(12):
            rel = rng.normal(0, 1.0)  # the candidate's score relative to its query's best matches
            good = rel > 0.5 if truth == "offset" else level + 0.3 * rel > 0.3
            rows.append({"query": f"q{q}", "gain": float(good), "positive": bool(good), "query_type": qtype,
                         "product_type": qtype if c < 8 else "other", "raw": level + rel, "offset": level})  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("truth", "expected"), [("raw", 0.0), ("offset", 1.0)])
def test_choose_strength_keeps_the_level_where_it_is_evidence(truth, expected):
    from sklearn.metrics import roc_auc_score

    from querylife.query_offset import STRENGTH_GRID, choose_strength

    pairs = _levels(truth)
    raw, offset = pairs["raw"].to_numpy(), pairs["offset"].to_numpy()
    strength, curve = choose_strength(pairs, raw, offset)
    assert strength == expected
    keep = (pairs["product_type"] == pairs["query_type"]).to_numpy()  # ROC-AUC in type, computed here
    for s in STRENGTH_GRID:
        want = roc_auc_score(pairs["positive"][keep], (raw - s * offset)[keep])
        assert curve[f"{s:.1f}"] == pytest.approx(want, abs=1e-9)
    assert abs(curve["1.0"] - curve["0.0"]) > 0.05
    # without product types the plain ROC-AUC decides; a tie goes to the smaller strength
    untyped = pairs.drop(columns=["query_type", "product_type"])
    assert choose_strength(untyped, raw, offset)[0] == expected
    flat = pairs.assign(positive=np.arange(len(pairs)) % 2 == 0)
    assert choose_strength(flat, np.zeros(len(pairs)), offset * 0)[0] == 0.0
    # a gain over raw scores no larger than min_gain leaves raw scores
    gain = max(curve.values()) - curve["0.0"]
    if expected == 1.0:
        assert choose_strength(pairs, raw, offset, min_gain=gain - 1e-6)[0] == 1.0
        assert choose_strength(pairs, raw, offset, min_gain=gain + 1e-6)[0] == 0.0


def test_dev_strength_is_fitted_from_the_model_s_own_dev_scores(tiny_config, tiny_data):
    from querylife.query_offset import choose_strength, strength_from_curve

    model = _model(tiny_config, tiny_data, **DEV)
    dev = pd.concat([tiny_data.splits[s] for s in ("train", "dev", "test")], ignore_index=True)  # many queries a type
    fit = fit_query_offset(model, tiny_data, dev=dev)
    raw, offset = _raw_and_offset(model, tiny_data, dev)  # computed here (float64) without the strength machinery
    _, curve = choose_strength(dev, raw, offset)
    # the same curve up to near-ties that float32 scoring orders the other way
    np.testing.assert_allclose(list(fit.dev_auc.values()), list(curve.values()), atol=1e-3)
    # and the choice follows choose_strength's rule on the fit's own curve
    expected = strength_from_curve(fit.dev_auc, model.query_offset.config.min_gain)
    assert fit.chosen_by == "dev" and fit.strength == expected
    assert float(model.query_offset.strength) == pytest.approx(expected)
    model.query_offset.strength.fill_(0.7)  # every scoring path subtracts strength x the offset
    test = tiny_data.splits["test"]
    shifted = score_pairs(model, tiny_data, test).score
    raw, offset = _raw_and_offset(model, tiny_data, test)
    np.testing.assert_allclose(shifted, raw - 0.7 * offset, atol=2e-5)


def test_without_dev_pairs_the_strength_is_zero_and_costs_nothing(tiny_config, tiny_data):
    model = _model(tiny_config, tiny_data, **DEV)
    test = tiny_data.splits["test"]
    raw = score_pairs(model, tiny_data, test).score
    fit = fit_query_offset(model, tiny_data)  # no dev
    assert fit.strength == 0.0 and "no dev split" in fit.chosen_by and fit.dev_auc == {}
    assert model.query_offset.ready and not model.query_offset.active
    assert model.offsets(encode_query_vectors(model, ["red dress"])) is None  # no reference scoring at strength 0
    np.testing.assert_allclose(score_pairs(model, tiny_data, test).score, raw, atol=1e-6)
    one_class = tiny_data.splits["dev"].assign(positive=True)
    fit = fit_query_offset(model, tiny_data, dev=one_class)
    assert fit.strength == 0.0 and "one class" in fit.chosen_by


def test_trainer_picks_and_saves_the_strength(tiny_config, tiny_data, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    out = Trainer(with_overrides(tiny_config, DEV), tiny_data, tmp_path / "run", progress=True).fit()
    fit = out.query_offset
    assert fit.chosen_by == "dev" and len(fit.dev_auc) == 11
    assert "query offsets: strength" in capsys.readouterr().out  # the trainer says what it chose
    summary = json.loads((tmp_path / "run" / "best" / "summary.json").read_text())
    assert summary["query_offset"]["strength"] == fit.strength and summary["query_offset"]["dev_auc"] == fit.dev_auc
    best = tmp_path / "run" / "best"
    reloaded = QueryLifeModel.from_pretrained(best)
    assert float(reloaded.query_offset.strength) == pytest.approx(fit.strength)
    from querylife.serve.service import _offset_strength

    assert _offset_strength(reloaded) == pytest.approx(fit.strength)  # what /readyz reports
    # a top_k checkpoint written before the strength existed meant the full offset
    weights = best / "model.safetensors"
    state = load_file(str(weights))
    save_file({k: v for k, v in state.items() if k != "query_offset.strength"}, str(weights))
    older = QueryLifeModel.from_pretrained(best)
    assert float(older.query_offset.strength) == 1.0
