"""Report writing: files, JSON content, Markdown tables, valid PNGs, atomic writes."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from querylife.metrics import EvalResult, evaluate_scored
from querylife.report import results_table_text, write_report

TYPES = ("charger", "dress")


def scored(noise: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(30):
        qtype = TYPES[q % 2]
        for j in range(8):
            g = int(rng.integers(0, 3))
            rows.append(
                {
                    "query": f"q{q}",
                    "product_id": f"p{q}-{j}",
                    "gain": float(g),
                    "positive": g == 2,
                    "product_type": qtype if g else TYPES[(q + 1) % 2],
                    "query_type": qtype,
                    "score": g + rng.normal(0, noise),
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def results() -> dict[str, EvalResult]:
    return {
        "bm25": evaluate_scored(scored(2.0, 0), threshold=1.0, n_boot=200),
        "mean": evaluate_scored(scored(0.8, 0), threshold=1.0, n_boot=200),
        "query|type gate": evaluate_scored(scored(0.5, 0), threshold=1.0, n_boot=200),
    }


GATES = {"type_gate": {"charger": 0.26, "dress": 0.5}, "query_type_gate": {"charger": 0.2, "dress": 0.55}}


def test_write_report_files_json_markdown_and_pngs(tmp_path, results):
    meta = {
        "command": "querylife eval --demo",
        "machine": {"cpus": 2},
        "timings": {"eval_s": 0.5},
        "nan": np.nan,
    }
    paths = write_report(
        tmp_path / "out",
        results,
        title="Demo eval",
        meta=meta,
        gate_weights=GATES,
        notes=["one seed only"],
        baseline_name="bm25",
    )
    assert set(paths) == {"json", "markdown", "ndcg_by_method", "ndcg_by_type", "gate_weights"}
    assert all(p.is_file() and p.parent == tmp_path / "out" for p in paths.values())

    data = json.loads(paths["json"].read_text())
    assert data["methods"] == list(results)
    assert data["meta"]["machine"] == {"cpus": 2} and data["meta"]["nan"] is None
    assert data["results"]["mean"]["overall"]["ndcg@10"] == pytest.approx(results["mean"].overall["ndcg@10"])
    assert data["gate_weights"] == GATES
    cmp = data["comparisons"]["query|type gate"]["ndcg@10"]
    assert cmp["mean_diff"] == pytest.approx(
        results["query|type gate"].overall["ndcg@10"] - results["bm25"].overall["ndcg@10"]
    )

    md = paths["markdown"].read_text()
    assert md.startswith("# Demo eval")
    for name in ("bm25", "mean", "query\\|type gate", "type_gate", "charger", "dress", "one seed only"):
        assert name in md
    # Rows keep the given order; numbers are the results' own, with the NDCG interval.
    assert md.index("| bm25 |") < md.index("| mean |") < md.index("| query\\|type gate |")
    mean = results["mean"]
    lo, hi = mean.ci["ndcg@10"]
    assert f"{mean.overall['ndcg@10']:.3f} [{lo:.3f}, {hi:.3f}]" in md
    assert f"{mean.overall['roc_auc_in_type']:.3f}" in md
    assert f"{mean.by_type['dress']['ndcg@10']:.3f}" in md
    assert "0.260" in md and "(baseline)" in md

    for key in ("ndcg_by_method", "ndcg_by_type", "gate_weights"):
        with Image.open(paths[key]) as img:
            img.verify()
            assert img.format == "PNG"
    assert not [f for f in os.listdir(tmp_path / "out") if f.startswith(".") or f.endswith(".tmp")]


def test_without_gate_weights_and_overwrite(tmp_path, results):
    first = write_report(tmp_path, {"bm25": results["bm25"]}, title="one", meta={})
    assert "gate_weights" not in first and not (tmp_path / "gate_weights.png").exists()
    second = write_report(tmp_path, results, title="two", meta={})
    assert json.loads(second["json"].read_text())["title"] == "two"
    assert "Gate weights" not in second["markdown"].read_text()


def test_failed_write_keeps_previous_report_and_no_temp_files(tmp_path, results, monkeypatch):
    write_report(tmp_path, results, title="good", meta={})
    before = (tmp_path / "report.json").read_text()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_report(tmp_path, results, title="bad", meta={})
    assert (tmp_path / "report.json").read_text() == before
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]


def test_bad_arguments_raise(tmp_path, results):
    with pytest.raises(ValueError, match="no results"):
        write_report(tmp_path, {}, title="x", meta={})
    with pytest.raises(ValueError, match="baseline"):
        write_report(tmp_path, results, title="x", meta={}, baseline_name="nope")


def test_results_table_text(results):
    text = results_table_text(results)
    for name in results:
        assert name in text
    assert f"{results['mean'].overall['mrr']:.3f}" in text
    assert "ROC-AUC in type" in text


def _run(name: str, result: EvalResult, **extra):
    from querylife.evaluate import MethodRun

    return MethodRun(name, f"{name} method", result, 1.0, scored(0.5, 1), {}, extra)


def test_genfilt_section_puts_the_unfiltered_model_first(results):
    from querylife.genfilt.quality import JudgeQuality
    from querylife.report import genfilt_section

    runs = [_run("querylife", results["mean"]), _run("mask_guide", results["bm25"])]
    entry = {"judge": "guide_absolute_0", "precision": 0.5, "recall": float("nan"), "mask_rate": 0.01,
             "train_protected": 3, "ndcg@10": 0.91234, "roc_auc": 0.8}
    md = genfilt_section(JudgeQuality({"mask_guide": entry}, n_batches=7, batch_size=16), runs)
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert lines[1].startswith(f"| no filter (querylife) | – | – | – | – | {results['mean'].overall['ndcg@10']:.4f}")
    assert lines[2] == "| mask_guide (guide_absolute_0) | 50.0% | – | 1.0% | 3 | 0.9123 | 0.8000 |"
    assert "7 sampled training batches of 16" in md


def test_suite_report_writes_scores_and_notes_gates_that_never_trained(tmp_path, results):
    from querylife.config import ExperimentConfig
    from querylife.report import write_suite_report

    runs = [_run("querylife", results["mean"], gate_trained=False, best_epoch=1), _run("bm25", results["bm25"])]
    splits = {"test": scored(0.5, 1)}
    paths = write_suite_report(tmp_path, runs, config=ExperimentConfig(), splits=splits, title="t", command="c")
    data = json.loads(paths["json"].read_text())
    assert data["baseline"] == "querylife" and data["meta"]["command"] == "c"
    assert data["meta"]["data"]["test"] == {"pairs": 240, "queries": 30}
    assert data["meta"]["methods"]["querylife"]["description"] == "querylife method"
    assert "Gate never trained in the selected checkpoint of `querylife` (epoch 1)" in paths["markdown"].read_text()
    scores = pd.read_parquet(paths["scores"])
    assert len(scores) == 480 and scores["method"].unique().tolist() == ["querylife", "bm25"]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]


def test_genfilt_command_outputs(tmp_path):
    from querylife.genfilt.quality import JudgeComparison
    from querylife.report import mask_table_text, write_judge_outputs, write_mask_report

    table = pd.DataFrame(
        {"precision": [1.0, 0.25], "recall": [0.5, 0.75], "n_masked": [2, 12], "seconds": [0.1, 0.2]},
        index=pd.Index(["duplicate_title", "gist_guide"], name="judge"),
    )
    comparison = JudgeComparison(table, n_batches=5, batch_size=16, source="none")
    paths = write_mask_report(tmp_path / "gf", comparison, command="querylife genfilt evaluate")
    md = paths["markdown"].read_text()
    assert "| gist_guide | 0.250 | 0.750 | 12.000 |" in md and "seconds" not in md  # only the shown columns
    assert "5 training batches of 16 positive pairs; descriptions: none." in md
    assert json.loads(paths["json"].read_text())["gist_guide"]["seconds"] == 0.2  # every column
    assert "0.250" in mask_table_text(comparison)

    flagged = pd.DataFrame({"query": ["q"], "product_id": ["p1"], "positive_id": ["p0"]})
    paths = write_judge_outputs(tmp_path / "j", flagged, {"flagged": 1, "rate": np.float64(0.5)}, command="cmd")
    assert json.loads(paths["summary"].read_text()) == {"flagged": 1, "rate": 0.5, "command": "cmd"}
    assert pd.read_csv(paths["flagged"]).equals(flagged)
