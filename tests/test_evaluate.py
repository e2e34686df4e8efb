"""The evaluation suite's pieces: group summaries, gate weights per type, the dev-fitted decision."""

import numpy as np
import pandas as pd
import pytest

from querylife.evaluate import MethodRun, _decide, gate_weight_by_type, group_summary


def _scored(seed=0, n_queries=12):
    rng = np.random.default_rng(seed)
    rows = []
    for qi in range(n_queries):
        qtype = "dress" if qi % 2 == 0 else "charger"
        other = "charger" if qtype == "dress" else "dress"
        for j in range(8):
            ptype = qtype if j < 6 else other
            gain = 2 if j < 2 else (1 if ptype == qtype else 0)
            score = gain + rng.normal(0, 0.7)
            weight = 0.8 if qtype == "dress" else 0.2
            rows.append((f"q{qi}", f"p{qi}_{j}", gain, gain == 2, ptype, qtype, score, weight))
    cols = ["query", "product_id", "gain", "positive", "product_type", "query_type", "score", "image_weight"]
    return pd.DataFrame(rows, columns=cols)


def test_gate_weight_by_type_uses_in_type_candidates():
    df = _scored()
    df.loc[df.product_type != df.query_type, "image_weight"] = 0.5  # must not leak into the per-type mean
    weights = gate_weight_by_type(df)
    assert weights == pytest.approx({"dress": 0.8, "charger": 0.2})
    assert gate_weight_by_type(df.assign(image_weight=np.nan)) == {}


def test_group_summary_restricts_to_the_group_queries():
    df = _scored()
    perfect = df.assign(score=df["gain"].astype(float))
    runs = [MethodRun("noisy", "", None, 0.0, df, gate_weight_by_type(df)),
            MethodRun("perfect", "", None, 0.0, perfect, {})]
    table, numbers = group_summary(runs, {"img": ["dress"], "txt": ["charger"]})
    assert numbers["perfect"]["img"]["ndcg@10"] == pytest.approx(1.0)
    assert numbers["perfect"]["txt"]["roc_auc"] == pytest.approx(1.0)
    assert numbers["noisy"]["img"]["image_weight"] == pytest.approx(0.8)
    assert np.isnan(numbers["perfect"]["img"]["image_weight"])
    assert "| noisy |" in table and "img: NDCG@10" in table and "txt: ROC-AUC" in table


def test_decision_is_fitted_on_dev_only():
    dev, test = _scored(1), _scored(2)
    result, scored, calibrator = _decide(dev, dev["score"].to_numpy(), test, test["score"].to_numpy(), 20, 0)
    assert calibrator is not None and 0 < calibrator.threshold < 1
    assert "prob" in scored and scored["prob"].between(0, 1).all()
    # a different test split does not change the fitted decision
    _, _, again = _decide(dev, dev["score"].to_numpy(), _scored(3), _scored(3)["score"].to_numpy(), 20, 0)
    assert again.threshold == pytest.approx(calibrator.threshold)
    assert 0 <= result.overall["f1"] <= 1
    # single-class dev: no decision, but ranking metrics still computed
    one_class = dev.assign(positive=False)
    res, scored2, cal2 = _decide(one_class, dev["score"].to_numpy(), test, test["score"].to_numpy(), 20, 0)
    assert cal2 is None and "prob" not in scored2 and np.isfinite(res.overall["ndcg@10"])
