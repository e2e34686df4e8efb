"""Methods over several training seeds: the aggregation math, run_seeds on the tiny storefront, `eval --seeds`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from querylife.evaluate import MethodRun
from querylife.metrics import evaluate_scored
from querylife.seeds import aggregate_seeds, seeds_section


def _scored(noise: float, seed: int, n_queries: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for qi in range(n_queries):
        qtype = "dress" if qi % 2 else "charger"
        for j in range(8):
            gain = 2 if j < 2 else (1 if j < 5 else 0)
            ptype = qtype if j < 6 else "other"
            rows.append((f"q{qi}", gain, gain == 2, ptype, qtype, gain + rng.normal(0, noise)))
    return pd.DataFrame(rows, columns=["query", "gain", "positive", "product_type", "query_type", "score"])


def _run(name: str, noise: float, seed: int) -> MethodRun:
    df = _scored(noise, seed)
    return MethodRun(name, "", evaluate_scored(df, n_boot=0), 0.0, df)


def test_aggregate_seeds_mean_std_paired_difference_and_ahead_counts():
    # "sharp" has little noise (better than the reference on every seed), "blurry" much more (worse on every seed)
    runs = {
        s: [_run("querylife", 1.0, 10 + s), _run("sharp", 0.2, 20 + s), _run("blurry", 3.0, 30 + s)] for s in (0, 1)
    }
    summary = aggregate_seeds(runs, n_boot=200)
    assert summary.seeds == (0, 1) and summary.methods == ("querylife", "sharp", "blurry")
    for name in summary.methods:
        for key in ("ndcg@10", "roc_auc", "roc_auc_in_type"):
            values = [next(r for r in runs[s] if r.name == name).result.overall[key] for s in (0, 1)]
            cell = summary.spread[name][key]
            assert cell.values == pytest.approx(values)
            assert cell.mean == pytest.approx(np.mean(values)) and cell.std == pytest.approx(np.std(values, ddof=1))
    sharp, blurry = summary.comparisons["sharp"], summary.comparisons["blurry"]
    assert "querylife" not in summary.comparisons
    per_seed = [runs[s][1].result.overall["ndcg@10"] - runs[s][0].result.overall["ndcg@10"] for s in (0, 1)]
    assert sharp.per_seed == pytest.approx(per_seed)
    assert sharp.mean_diff == pytest.approx(np.mean(per_seed))  # same queries on every seed
    assert sharp.mean_diff > 0 and sharp.lo > 0 and sharp.ahead == 2 and sharp.n_seeds == 2
    assert blurry.mean_diff < 0 and blurry.hi < 0 and blurry.ahead == 0
    assert sharp.lo <= sharp.mean_diff <= sharp.hi and sharp.n_queries == 30

    text = seeds_section(summary, n_boot=200)
    assert "| sharp |" in text and "2 of 2 seeds" in text and "0 of 2 seeds" in text and "(reference)" in text
    assert "paired percentile bootstrap over queries" in text
    assert set(summary.to_dict()["per_seed"]) == {"0", "1"}


def test_aggregate_seeds_per_type_group():
    runs = {s: [_run("querylife", 1.0, 10 + s), _run("sharp", 0.2, 20 + s)] for s in (0, 1, 2)}
    groups = {"clothes": ["dress"], "all": ["dress", "charger"]}
    summary = aggregate_seeds(runs, n_boot=200, groups=groups)
    assert summary.groups == groups
    for s, seed_runs in runs.items():
        for r in seed_runs:
            sub = r.scored[r.scored["query_type"] == "dress"]
            expected = evaluate_scored(sub, n_boot=0, by_type=False).overall
            cell = summary.group_spread[r.name]["clothes"]
            assert cell["ndcg@10"].values[s] == pytest.approx(expected["ndcg@10"])
            assert cell["roc_auc_in_type"].values[s] == pytest.approx(expected["roc_auc_in_type"])
    # a group of every type is the overall comparison; a one-type group compares that type's 15 queries
    c_all, c_dress = summary.group_comparisons["sharp"]["all"], summary.group_comparisons["sharp"]["clothes"]
    assert c_all.mean_diff == pytest.approx(summary.comparisons["sharp"].mean_diff)
    assert c_dress.n_queries == 15 and c_dress.n_seeds == 3 and c_dress.lo <= c_dress.mean_diff <= c_dress.hi
    text = seeds_section(summary, n_boot=200)
    assert "| clothes (dress) | sharp |" in text and "Per type group" in text
    d = summary.to_dict()
    assert d["group_comparisons"]["sharp"]["clothes"]["n_queries"] == 15
    assert set(d["group_summary"]["querylife"]) == {"clothes", "all"}


def test_aggregate_seeds_rejects_seeds_with_different_methods():
    with pytest.raises(ValueError, match="seed 1 ran"):
        aggregate_seeds({0: [_run("querylife", 1.0, 0)], 1: [_run("mean", 1.0, 1)]}, n_boot=0)
    no_ref = aggregate_seeds({0: [_run("mean", 1.0, 0)]}, n_boot=0)
    assert no_ref.reference is None and no_ref.comparisons == {} and no_ref.spread["mean"]["ndcg@10"].std == 0.0


def test_run_seeds_trains_each_seed_and_runs_baselines_once(tiny_config, tiny_store, tmp_path):
    from querylife.config import with_overrides
    from querylife.data.prepare import prepare_dataset
    from querylife.suite import Suite, run_seeds

    data = prepare_dataset(tiny_store.catalog_path, tiny_store.pairs_path, image_size=32, progress=False)
    cfg = with_overrides(tiny_config, {"train.epochs": 1, "train.seed": 3, "eval.n_boot": 50})
    result = run_seeds(cfg, data, tmp_path, methods=["bm25", "querylife"], n_seeds=2, progress=False,
                       log=lambda s: None)
    summary = result.summary
    assert summary.seeds == (3, 4)
    assert summary.runs[3][0] is summary.runs[4][0]  # bm25 does not depend on the training seed: scored once
    assert summary.spread["bm25"]["ndcg@10"].std == 0.0
    assert (tmp_path / "seed3" / "runs" / "querylife").is_dir() and (tmp_path / "seed4" / "runs" / "querylife").is_dir()
    ndcg = [summary.runs[s][1].result.overall["ndcg@10"] for s in (3, 4)]
    assert summary.spread["querylife"]["ndcg@10"].mean == pytest.approx(np.mean(ndcg))
    assert summary.spread["querylife"]["ndcg@10"].std == pytest.approx(np.std(ndcg, ddof=1))
    c = summary.comparisons["bm25"]
    assert c.ahead == sum(summary.runs[s][0].result.overall["ndcg@10"] > n for s, n in zip((3, 4), ndcg, strict=True))

    # seed 4's run is exactly the single-seed suite's run with train.seed=4
    single = Suite(with_overrides(cfg, {"train.seed": 4}), data, tmp_path / "single", progress=False,
                   log=lambda s: None).run_method("querylife")
    assert single.result.overall == pytest.approx(summary.runs[4][1].result.overall, nan_ok=True)

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["title"] == "querylife evaluation over 2 seeds"
    seeds_meta = report["meta"]["seeds"]
    assert seeds_meta["seeds"] == [3, 4] and set(seeds_meta["per_seed"]) == {"3", "4"}
    assert seeds_meta["summary"]["querylife"]["ndcg@10"]["per_seed"] == pytest.approx(ndcg)
    md = (tmp_path / "report.md").read_text()
    assert "## Over 2 seeds" in md and "Δ NDCG@10 vs querylife" in md and "of 2 seeds" in md
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic writes, nothing left over


@pytest.mark.slow
def test_eval_seeds_cli_reports_over_seeds_and_seeds_1_is_the_old_report(tiny_store, tiny_text_model_dir, tmp_path):
    from test_cli import cli, show, tiny_overrides

    data = ["--catalog", tiny_store.catalog_path, "--pairs", tiny_store.pairs_path, "--quiet",
            "--methods", "bm25,querylife", *tiny_overrides(tiny_text_model_dir, epochs=1)]
    proc = cli("eval", "--suite", "--seeds", "2", "--out", tmp_path / "two", *data, cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert "ahead" in proc.stdout and "querylife" in proc.stdout
    report = json.loads((tmp_path / "two" / "report.json").read_text())
    assert report["meta"]["seeds"]["seeds"] == [0, 1]
    assert "## Over 2 seeds" in (tmp_path / "two" / "report.md").read_text()

    # --seeds 1 is today's command: the same report, byte for byte but for the command line it records
    old = cli("eval", "--suite", "--out", tmp_path / "old", *data, cwd=tmp_path)
    one = cli("eval", "--suite", "--seeds", "1", "--out", tmp_path / "one", *data, cwd=tmp_path)
    assert old.returncode == 0 and one.returncode == 0, show(one)
    old_md, one_md = ((tmp_path / d / "report.md").read_text() for d in ("old", "one"))
    assert one_md.replace(" --seeds 1", "").replace(str(tmp_path / "one"), str(tmp_path / "old")) == old_md
    old_json, one_json = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("old", "one"))
    assert one_json["results"] == old_json["results"]
    assert "Over" not in one_md and "seeds" not in one_json["meta"]

    bad = cli("eval", "--checkpoint", tmp_path / "nope", "--seeds", "2", "--out", tmp_path / "x", cwd=tmp_path)
    assert bad.returncode == 2 and "--seeds needs --suite" in bad.stderr
