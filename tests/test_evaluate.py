"""The evaluation suite's pieces: group metrics and their table, gate weights per type, the dev-fitted decision."""

import numpy as np
import pandas as pd
import pytest

from querylife.evaluate import MethodRun, decide, gate_weight_by_type, metrics_by_group
from querylife.report import group_table


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


def test_metrics_by_group_restrict_to_the_group_queries():
    df = _scored()
    perfect = df.assign(score=df["gain"].astype(float))
    runs = [MethodRun("noisy", "", None, 0.0, df, gate_weight_by_type(df)),
            MethodRun("perfect", "", None, 0.0, perfect, {})]
    groups = {"img": ["dress"], "txt": ["charger"]}
    numbers = metrics_by_group(runs, groups)
    table = group_table(numbers, groups)
    assert numbers["perfect"]["img"]["ndcg@10"] == pytest.approx(1.0)
    assert numbers["perfect"]["txt"]["roc_auc"] == pytest.approx(1.0)
    assert numbers["noisy"]["img"]["image_weight"] == pytest.approx(0.8)
    assert np.isnan(numbers["perfect"]["img"]["image_weight"])
    assert "| noisy |" in table and "img: NDCG@10" in table and "txt: ROC-AUC" in table


def test_decision_is_fitted_on_dev_only():
    dev, test = _scored(1), _scored(2)
    result, scored, calibrator = decide(dev, dev["score"].to_numpy(), test, test["score"].to_numpy(), 20, 0)
    assert calibrator is not None and 0 < calibrator.threshold < 1
    assert "prob" in scored and scored["prob"].between(0, 1).all()
    # a different test split does not change the fitted decision
    _, _, again = decide(dev, dev["score"].to_numpy(), _scored(3), _scored(3)["score"].to_numpy(), 20, 0)
    assert again.threshold == pytest.approx(calibrator.threshold)
    assert 0 <= result.overall["f1"] <= 1
    # single-class dev: no decision, but ranking metrics still computed
    one_class = dev.assign(positive=False)
    res, scored2, cal2 = decide(one_class, dev["score"].to_numpy(), test, test["score"].to_numpy(), 20, 0)
    assert cal2 is None and "prob" not in scored2 and np.isfinite(res.overall["ndcg@10"])


def test_report_says_when_the_selected_checkpoint_predates_the_gate(tiny_config, tiny_store, tmp_path):
    from querylife.config import with_overrides
    from querylife.data.prepare import prepare_dataset
    from querylife.suite import Suite

    data = prepare_dataset(tiny_store.catalog_path, tiny_store.pairs_path, image_size=32, progress=False)
    cfg = with_overrides(tiny_config, {"train.patience": 0, "train.gate_start_fraction": 0.5})
    suite = Suite(cfg, data, tmp_path / "report", progress=False, n_boot=0, log=lambda s: None)
    run = suite.run_method("querylife")
    assert run.extra["gate_trained"] is (run.extra["best_epoch"] == 2)  # 2 epochs, gate from the second
    assert "gate_trained" not in suite.run_method("mean").extra  # no gate, no flag
    from querylife.calibrate import load_calibrator

    cal, note = load_calibrator(tmp_path / "report" / "runs" / "querylife" / "best")  # as `train` writes it
    assert cal is not None and run.extra["calibrator"] is not None, note
    assert cal.to_dict() == run.extra["calibrator"]  # the decision eval reported, for `serve`
    run.extra.update(gate_trained=False, best_epoch=1)
    suite.report([run], title="t")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Gate never trained in the selected checkpoint of `querylife` (epoch 1)" in text
    assert run.extra["offset_chosen_by"] == "dev" and 0.0 <= run.extra["offset_strength"] <= 1.0
    strength = run.extra["offset_strength"]
    assert "Query offset strength (0 = raw fused scores" in text and f"`querylife` {strength:.1f}" in text
    run.extra.update(gate_trained=True)
    suite.report([run], title="t")
    assert "Gate never trained" not in (tmp_path / "report" / "report.md").read_text()
