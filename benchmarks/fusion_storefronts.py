"""Fusion modes across the generated storefronts (issue 14): every mode trained with several seeds on each
storefront, with dev numbers (what choices were made on) and test numbers (reported, never tuned on).

For each storefront (``demo``, ``home_books``, ``media_market``; 3,000 products, data seed 0 unless ``--data-seed``
says otherwise, split by intent) and
training seed, each method is trained once (``querylife.suite.Suite``) and scored on dev and test: overall, per
type group (image- / title-informative / mixed) and per product type; NDCG@10, pooled and within-type ROC-AUC,
gate weights per type. ``dev_type_gate`` is not trained again: its training is exactly ``mean``'s (its per-type
weights get no gradient; tests/test_gate_fit.py checks this), so the ``mean`` run's vectors get the per-type
weights picked on dev. Its honest dev estimate is cross-fitted: weights picked on one half of the dev intents are
scored on the other half, and the other way round.

Run:  python benchmarks/fusion_storefronts.py --seeds 0 1 2 3 4 --work runs/fusion --out benchmarks/results
      (one JSON line per run in WORK/runs.jsonl, written as each finishes; --lock FILE takes that file lock
      around each training run on a shared machine). Then ``--report [--tag T]`` writes
      fusion_{storefront}[_T].{md,json} and fusion_storefronts[_T].{md,json}, each ending in issue 14's acceptance
      lines for the reference mode (``--reference``, default ``query_gate``: the library's default fusion).
      ``--set KEY=VALUE`` changes the config of every run (e.g. the vision tower; the storefronts are rendered at
      its input size). ``--data-seed N`` generates the storefronts from another seed (new products, queries and
      split: a replication); give it its own ``--work``, since the data lives in WORK/data/<storefront>.
      ``--shared-photo-as-missing K`` (off by default) treats a photo shared by K or more distinct products (distinct
      group ids: duplicate listings legitimately share a photo) as missing for every product showing it, as if the
      catalogue had no photo there (a "no image available" placeholder says nothing product-specific).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from querylife.config import load_config, with_overrides  # noqa: E402
from querylife.data.prepare import Dataset  # noqa: E402
from querylife.data.storefront import DemoConfig, DemoStorefront  # noqa: E402
from querylife.evaluate import MethodRun, evaluate_model, gate_weight_by_type  # noqa: E402
from querylife.gate_fit import fit_type_weights, set_type_weights  # noqa: E402
from querylife.methods import METHODS  # noqa: E402
from querylife.metrics import evaluate_scored, per_query_metrics  # noqa: E402
from querylife.model import WEIGHTS_NAME, QueryLifeModel  # noqa: E402
from querylife.query_offset import QueryOffsetConfig  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402
from querylife.scoring import FeatureCache, score_pairs  # noqa: E402
from querylife.suite import Suite  # noqa: E402
from querylife.towers import vision_image_size  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import demo_dataset, file_lock, quiet_transformers  # noqa: E402

STOREFRONTS = ["demo", "home_books", "media_market"]
TRAINED = ["query_gate", "mean", "concat", "title_only", "image_only"]
KEYS = ("ndcg@10", "roc_auc", "roc_auc_in_type")


@dataclass
class SharedPhotos:
    """What :func:`shared_photos_as_missing` removed: ``flagged`` (N,) bool over catalogue rows; ``photos``: the
    number of distinct shared photos; ``by_type``: per product type, products, flagged count and share."""

    min_products: int
    flagged: np.ndarray
    photos: int
    by_type: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary(self) -> dict:
        return {"min_products": self.min_products, "photos": self.photos, "flagged": int(self.flagged.sum()),
                "by_type": self.by_type}  # fmt: skip

    def lines(self) -> list[str]:
        out = [f"shared photos (>= {self.min_products} distinct products): {self.photos} photos, "
               f"{int(self.flagged.sum())} products now without image"]  # fmt: skip
        for t, d in self.by_type.items():
            if d["flagged"]:
                out.append(f"  {t}: {d['flagged']}/{d['products']} products ({d['share']:.1%}), "
                           f"{d['photos']} distinct shared photos")  # fmt: skip
        return out


def shared_photos_as_missing(data: Dataset, min_products: int) -> SharedPhotos:
    """Treat every photo shown by at least ``min_products`` distinct products as missing, in place: those products
    get ``has_image`` False and zero pixels, exactly as products the catalogue gave no photo (the towers, the
    feature cache, training, dev selection and scoring all read ``data.has_image``). Distinct products are distinct
    ``group_id`` values where the catalogue has that column (duplicate listings of one product share a photo
    legitimately), else distinct ``product_id`` values. Uses no label.

    Example: ``shared_photos_as_missing(data, 3).lines()`` -> ``["shared photos (>= 3 distinct products): 2 photos,
    781 products now without image", "  book: 398/398 products (100.0%), 1 distinct shared photos", ...]``.
    """
    if min_products < 2:
        raise ValueError(f"min_products must be at least 2 (one product's own photo is not shared), not {min_products}")
    cat = data.catalog
    owner = cat["group_id"] if "group_id" in cat else cat["product_id"]
    has = data.has_image.numpy().astype(bool)
    keys = pd.Series(
        [
            hashlib.blake2b(data.images[i].contiguous().numpy().tobytes(), digest_size=16).hexdigest() if h else None
            for i, h in enumerate(has)
        ],  # fmt: skip
        index=cat.index,
    )
    owners = owner[has].groupby(keys[has]).nunique()  # distinct products per photo
    shared = set(owners.index[owners >= min_products])
    flagged = keys.isin(shared).to_numpy() & has
    by_type = {}
    for t, rows in cat.groupby("product_type").indices.items():
        f = flagged[rows]
        by_type[str(t)] = {"products": len(rows), "flagged": int(f.sum()), "share": float(f.mean()),
                           "photos": int(keys.iloc[rows][f].nunique())}  # fmt: skip
    idx = torch.from_numpy(np.flatnonzero(flagged))
    data.has_image[idx] = False
    data.images[idx] = 0  # the Dataset's contract: zeros where has_image is False
    return SharedPhotos(min_products, flagged, len(shared), by_type)


@dataclass
class SavedRuns:
    """A work directory's storefront as its runs saw it, to rescore their saved best checkpoints (the diagnostics'
    common start): the base config (the runs' ``model.*`` overrides), the prepared dataset (photos flagged as
    missing when the runs used ``--shared-photo-as-missing``) and one feature cache for every checkpoint."""

    work: Path
    store: str
    config: Any
    data: Dataset
    cache: FeatureCache

    @classmethod
    def open(cls, work: Path, store: str) -> SavedRuns:
        meta = json.loads((work / "meta.json").read_text())
        overrides = [o for o in meta["command"].split() if o.startswith("model.")]
        size = vision_image_size(load_config(None, overrides).model.tower)
        demo = DemoConfig(n_products=meta.get("products", 3000), seed=meta.get("data_seed", 0), storefront=store,
                          image_size=size)  # fmt: skip
        _, cfg, data = demo_dataset(work / "data" / store, overrides, demo)
        if meta.get("shared_photo_as_missing") is not None:
            shared_photos_as_missing(data, int(meta["shared_photo_as_missing"]))
        return cls(work, store, cfg, data, FeatureCache())

    def type_groups(self) -> dict[str, list[str]]:
        """The storefront's product types by the modality that carries them (:meth:`DemoStorefront.type_groups`)."""
        return DemoStorefront.at(self.work / "data" / self.store).type_groups()

    def meta(self) -> dict:
        """The work directory's meta.json (its command, data seed...)."""
        return json.loads((self.work / "meta.json").read_text())

    def model(self, seed: int, method: str) -> QueryLifeModel:
        """The saved best checkpoint of ``method`` trained with ``seed``."""
        cfg = with_overrides(self.config, {"train.seed": seed})
        suite = Suite(cfg, self.data, self.work / self.store / f"seed{seed}", progress=False, n_boot=0,
                      log=lambda s: None)  # fmt: skip
        suite.cache = self.cache
        return load_model(suite, with_overrides(cfg, dict(METHODS[method].overrides)), suite.out_dir / "runs" / method)


def load_model(suite: Suite, cfg, run_dir: Path) -> QueryLifeModel:
    """A suite run's best checkpoint, rebuilt around the suite's shared frozen text tower. Its query offset follows
    the checkpoint's own config.json (runs made while ``top_k`` was the default carry a fitted reference)."""
    update: dict = {"product_types": suite.data.product_types}
    saved = json.loads((run_dir / "best" / "config.json").read_text())
    if "query_offset" in saved:
        update["query_offset"] = QueryOffsetConfig(**saved["query_offset"])
    model_cfg = cfg.model.model_copy(update=update)
    model = QueryLifeModel(model_cfg, towers=suite._towers())
    model.load_state_dict(load_file(str(run_dir / "best" / WEIGHTS_NAME)), strict=False)
    return model.eval()


def scored_metrics(scored: pd.DataFrame, groups: dict[str, list[str]]) -> dict:
    """Overall, per type group and per product type metrics of scored pairs (query_type column needed)."""
    out = {"overall": {k: float(evaluate_scored(scored, n_boot=0, by_type=False).overall[k]) for k in KEYS}}
    for name, types in [*groups.items(), *((t, [t]) for t in sorted(scored["query_type"].unique()))]:
        sub = scored[scored["query_type"].isin(types)]
        res = evaluate_scored(sub, n_boot=0, by_type=False).overall if len(sub) else {}
        out[name] = {k: float(res.get(k, np.nan)) for k in KEYS}
    return out


def dev_halves(dev: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Dev split in two by intent (paraphrases of one intent stay together), alternating over sorted intents."""
    key = dev["intent"] if "intent" in dev else dev["query"]
    names = sorted(key.unique())
    first = set(names[::2])
    mask = key.isin(first)
    return dev[mask], dev[~mask]


def cross_fit(model: QueryLifeModel, data, dev: pd.DataFrame, cache) -> pd.DataFrame:
    """Dev scores of ``dev_type_gate`` with each half's weights picked on the other half."""
    a, b = dev_halves(dev)
    parts = []
    start = torch.full_like(model.fusion.type_logit, model.config.fusion.init_image_weight).cpu()
    for fit_on, score_on in ((a, b), (b, a)):
        set_type_weights(model, start)
        fit_type_weights(model, data, fit_on, cache)
        parts.append(score_on.assign(score=score_pairs(model, data, score_on, cache).score))
    set_type_weights(model, start)
    return pd.concat(parts).loc[dev.index]


def finished(run_dir: Path) -> dict | None:
    """The trainer state of a run that trained to its end (all epochs or early-stopped), else None."""
    path = run_dir / "last" / "trainer_state.json"
    if not (path.exists() and (run_dir / "best").exists()):
        return None
    state = json.loads(path.read_text())
    epochs = json.loads((run_dir / "config.json").read_text())["train"]["epochs"]
    return state if state.get("stopped_early") or state.get("epoch", 0) >= epochs else None


def run_or_reuse(suite: Suite, name: str) -> MethodRun:
    """Train method ``name``, or evaluate its finished checkpoint from an interrupted earlier invocation."""
    run_dir = suite.out_dir / "runs" / name
    state = finished(run_dir)
    if state is None:
        return suite.run_method(name)
    run = suite.run_checkpoint(run_dir / "best")
    best = json.loads((run_dir / "best" / "summary.json").read_text())
    run.description = METHODS[name].description
    run.extra = {"best_epoch": best["best_epoch"], "dev_ndcg@10": best["dev_ndcg@10"], "reused_checkpoint": True}
    return run


def run_one(
    store_name: str, seed: int, suite: Suite, cfg, groups, data, lock: str | None, methods, log: Path
) -> list[dict]:
    out = []
    dev = data.splits["dev"]
    for name in methods:
        t0 = time.time()
        with file_lock(lock):
            run = run_or_reuse(suite, name)
            mcfg = with_overrides(cfg, dict(METHODS[name].overrides))
            model = load_model(suite, mcfg, suite.out_dir / "runs" / name)
            dev_scored = dev.assign(score=score_pairs(model, data, dev, suite.cache).score)
            runs = [(run, dev_scored, {})]
            if name == "mean":  # dev_type_gate: mean's vectors, per-type weights picked on dev
                dcfg = with_overrides(cfg, dict(METHODS["dev_type_gate"].overrides))
                dtg = load_model(suite, dcfg, suite.out_dir / "runs" / name)
                t1 = time.time()
                cv_scored = cross_fit(dtg, data, dev, suite.cache)
                fit = fit_type_weights(dtg, data, dev, suite.cache)
                res, scored, _ = evaluate_model(
                    dtg, data, cache=suite.cache, n_boot=0, seed=seed, decision=suite.decision
                )
                dtg_run = MethodRun(
                    "dev_type_gate",
                    METHODS["dev_type_gate"].description,
                    res,
                    run.seconds + time.time() - t1,
                    scored,
                    gate_weight_by_type(scored),
                    {
                        **run.extra,
                        "type_weights": fit.weights,
                        "fit_dev_before": fit.dev_ndcg_before,
                        "fit_dev_after": fit.dev_ndcg_after,
                        "moves": fit.moves,
                    },
                )
                dtg_dev = dev.assign(score=score_pairs(dtg, data, dev, suite.cache).score)
                runs.append((dtg_run, dtg_dev, {"dev_crossfit": scored_metrics(cv_scored, groups)}))
        state_path = suite.out_dir / "runs" / name / "last" / "trainer_state.json"  # every epoch's dev score
        hist = json.loads(state_path.read_text()).get("history") if state_path.exists() else None
        for r, dscored, more in runs:
            rec = {
                "storefront": store_name,
                "seed": seed,
                "method": r.name,
                "test": scored_metrics(r.scored, groups),
                "dev": scored_metrics(dscored, groups),
                "gate_by_type": r.gate_by_type,
                "seconds": round(time.time() - t0, 1),
                "extra": {k: v for k, v in (r.extra or {}).items() if k not in ("calibrator", "history")},
                "test_per_query": r.result.per_query[["query", "ndcg@10"]].to_dict("list"),
                "dev_per_query": per_query_metrics(dscored, ks=(10,))[["query", "ndcg@10"]].to_dict("list"),
                **more,
            }
            if hist:
                rec["history"] = hist
            out.append(rec)
            with log.open("a") as fh:  # one line per run as it finishes: an interrupted invocation keeps its runs
                fh.write(json.dumps(rec, default=float) + "\n")
        print(
            f"{store_name} seed {seed} {name}: "
            + ", ".join(
                f"{r.name} dev {dscored_ndcg:.4f} test {r.result.overall['ndcg@10']:.4f}"
                for r, dscored_ndcg in (
                    (r, float(np.nanmean(per_query_metrics(d, ks=(10,))["ndcg@10"]))) for r, d, _ in runs
                )
            ),
            flush=True,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--storefronts", nargs="+", default=STOREFRONTS)
    parser.add_argument("--products", type=int, default=3000)
    # another data seed is a fresh sample of the same generators: for replicating a finding, never for tuning
    parser.add_argument("--data-seed", type=int, default=0, help="the storefronts' generator seed (DemoConfig.seed)")
    # a photo shared by K+ distinct products (a generic icon) is no product photo; off by default (None)
    parser.add_argument("--shared-photo-as-missing", type=int, default=None, metavar="K",
                        help="treat a photo shared by >= K distinct products (group ids) as missing")  # fmt: skip
    parser.add_argument("--methods", nargs="+", default=TRAINED, help="trained methods, in this order per seed")
    parser.add_argument("--work", default="runs/fusion")
    parser.add_argument("--lock", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--report", action="store_true", help="only write OUT/fusion_*.md/json from WORK/runs.jsonl")
    parser.add_argument("--reference", default="query_gate", help="the Δ columns' reference (the default mode)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--tag", default="", help="report files fusion_<storefront>_<tag>.md (a tower set-up)")
    args = parser.parse_args()
    if args.report:
        write_report(Path(args.work), Path(args.out), args.reference, args.tag)
        return
    quiet_transformers()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "runs.jsonl"
    done = set()
    if log.exists():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            done.add((r["storefront"], r["seed"], r["method"]))
    meta_path = work / "meta.json"
    if meta_path.exists():  # a resumed run must not mix two data seeds in one WORK
        old = json.loads(meta_path.read_text())
        before = old.get("data_seed", 0)
        if before != args.data_seed:
            raise SystemExit(f"{meta_path}: WORK holds data seed {before}, not {args.data_seed}; use another --work")
        if old.get("shared_photo_as_missing") != args.shared_photo_as_missing:
            raise SystemExit(f"{meta_path}: WORK was run with --shared-photo-as-missing "
                             f"{old.get('shared_photo_as_missing')}; use another --work")  # fmt: skip
    meta = {
        "command": _without_lock(command_line()),
        "machine": machine_info(),
        "data_seed": args.data_seed,
        "products": args.products,
        "shared_photo_as_missing": args.shared_photo_as_missing,
        "shared_photos": {},
    }
    meta_path.write_text(json.dumps(meta, indent=2, default=str))
    stores: dict = {}
    caches: dict = {}
    for seed in args.seeds:
        for method in args.methods:  # method-outer: each method on every storefront before the next method
            for name in args.storefronts:
                # mean's record comes with dev_type_gate's (the same run): both must be there
                if (name, seed, method) in done and (method != "mean" or (name, seed, "dev_type_gate") in done):
                    continue
                if name not in stores:
                    # rendered at the vision tower's own input size (224 px for EfficientNet-Lite0), as the demo is
                    size = vision_image_size(load_config(None, args.overrides).model.tower)
                    stores[name] = demo_dataset(
                        Path(args.work) / "data" / name,
                        args.overrides,
                        DemoConfig(n_products=args.products, seed=args.data_seed, storefront=name, image_size=size),
                    )
                    if args.shared_photo_as_missing is not None:  # before any feature is computed or model trained
                        removed = shared_photos_as_missing(stores[name][2], args.shared_photo_as_missing)
                        print(f"{name}: " + "\n".join(removed.lines()), flush=True)
                        meta["shared_photos"][name] = removed.summary()
                        meta_path.write_text(json.dumps(meta, indent=2, default=str))
                store, base, data = stores[name]
                cfg = with_overrides(base, {"train.seed": seed})
                suite = Suite(cfg, data, work / name / f"seed{seed}", progress=False, n_boot=0, log=lambda s: None)
                if name in caches:  # the frozen text tower's features are the same on every seed
                    suite.cache, suite._text_tower = caches[name]
                run_one(name, seed, suite, cfg, store.type_groups(), data, args.lock, [method], log)
                caches[name] = (suite.cache, suite._text_tower)


def _shared_note(meta: dict, store: str) -> str:
    """The report header's words on ``--shared-photo-as-missing`` (empty when it was off)."""
    k = meta.get("shared_photo_as_missing")
    if k is None:
        return ""
    got = meta.get("shared_photos", {}).get(store, {})
    return (f" photos shared by {k}+ distinct products treated as missing ({got.get('flagged', '?')} products, "
            f"{got.get('photos', '?')} photos);")  # fmt: skip


def _without_lock(command: str) -> str:
    """The command without ``--lock FILE``: the lock only orders runs on a shared machine, the results do not
    depend on it, and a lock path is the machine's, not the project's.

    Example: ``_without_lock("python b.py --lock /tmp/x --seeds 0")`` -> ``"python b.py --seeds 0"``.
    """
    words, out = shlex.split(command), []
    skip = False
    for w in words:
        if skip:
            skip = False
        elif w == "--lock":
            skip = True
        elif not w.startswith("--lock="):
            out.append(w)
    return shlex.join(out)


# ---- the report: WORK/runs.jsonl -> OUT/fusion_{storefront}.{md,json} -------------------------------------------
ORDER = ["dev_type_gate", "query_gate", "mean", "concat", "title_only", "image_only"]
LABELS = {
    "dev_type_gate": "`dev_type_gate` (mean training + per-type weights on dev)",
    "query_gate": "`query_type_gate` (Query-LIFE's gate, selected after it started)",
    "mean": "`mean`",
    "concat": "`concat` + MLP",
    "title_only": "title only",
    "image_only": "image only",
}


def _cell(values: list[float], digits: int = 4) -> str:
    v = np.asarray(values, dtype=float)
    if not len(v) or not np.isfinite(v).any():
        return "–"
    std = float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0
    return f"{np.nanmean(v):.{digits}f} ± {std:.{digits}f}"


def _per_query(recs: list[dict], types: set[str] | None, qtype: dict[str, str], split: str = "test") -> pd.DataFrame:
    frames = []
    for r in recs:
        pq = pd.DataFrame(r[f"{split}_per_query"])
        if types is not None:
            pq = pq[pq["query"].map(qtype).isin(types)]
        frames.append(pq)
    return pd.concat(frames).groupby("query", as_index=False)["ndcg@10"].mean()


def _delta(recs, ref, types, qtype, n_boot=1000, split: str = "test") -> dict:
    from querylife.metrics import paired_bootstrap

    a, b = _per_query(recs, types, qtype, split), _per_query(ref, types, qtype, split)
    pb = paired_bootstrap(a, b, "ndcg@10", n_boot=n_boot)
    return {k: float(pb[k]) for k in ("mean_diff", "lo", "hi", "n_queries")}


def _fmt_delta(d: dict | None) -> str:
    if d is None:
        return "(reference)"
    return f"{d['mean_diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"


def _seed_delta(a: list[float], b: list[float]) -> dict:
    """Mean of the per-seed differences a - b with a 95% t interval over seeds (the runs are paired by seed)."""
    from scipy import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {"mean_diff": float(d.mean()), "lo": float(d.mean() - half), "hi": float(d.mean() + half), "n": len(d)}


def criteria(by: dict, reference: str, groups: dict, qtype: dict, split: str = "test") -> list[dict]:
    """Issue 14's acceptance lines for the ``reference`` mode on one storefront: at least as good as concat + MLP
    overall, and at least as good as the best single modality (the better of title / image only on ``split``'s
    mean) on each type group; NDCG@10 (paired bootstrap over queries) and within-type ROC-AUC (paired by
    seed, t interval). "at least as good" = the 95% interval of reference - other reaches 0 or above."""
    out = []
    ref = by[reference]

    def line(scope: str, other: str, types: set[str] | None) -> dict:
        key = "overall" if types is None else scope
        nd = _delta(ref, by[other], types, qtype, split=split)
        auc = _seed_delta([r[split][key]["roc_auc_in_type"] for r in ref],
                          [r[split][key]["roc_auc_in_type"] for r in by[other]])  # fmt: skip
        return {"scope": scope, "other": other, "ndcg@10": nd, "roc_auc_in_type": auc,
                "met": bool(nd["hi"] >= 0 and auc["hi"] >= 0)}  # fmt: skip

    if "concat" in by:
        out.append(line("overall", "concat", None))
    for g, types in groups.items():
        singles = [m for m in ("title_only", "image_only") if m in by]
        if not singles:
            continue
        best = max(singles, key=lambda m: np.mean([r[split][g]["ndcg@10"] for r in by[m]]))
        out.append(line(g, best, set(types)))
    return out


def write_report(work: Path, out: Path, reference: str, tag: str = "") -> None:
    from benchkit import run_header, write_results

    from querylife.report import md_table

    recs = [json.loads(line) for line in (work / "runs.jsonl").read_text().splitlines()]
    meta = json.loads((work / "meta.json").read_text())
    suffix = f"_{tag}" if tag else ""
    # runs written before --data-seed existed used data seed 0 and 3,000 products
    data_seed, products = int(meta.get("data_seed", 0)), int(meta.get("products", 3000))
    seed_opt = f" --seed {data_seed}" if data_seed else ""
    combined: dict = {}
    for store in STOREFRONTS:
        mine = [r for r in recs if r["storefront"] == store]
        if not mine:
            continue
        groups = DemoStorefront.at(work / "data" / store).type_groups()
        queries = pd.read_parquet(work / "data" / store / "queries.parquet")
        qtype = dict(zip(queries["query"], queries["product_type"], strict=True))
        # only seeds every recorded method has finished: a run still going (or stopped) leaves paired seeds
        ran = {(r["seed"], r["method"]) for r in mine}
        methods = {m for _, m in ran}
        seeds = sorted({s for s, m in ran if m == reference and all((s, x) in ran for x in methods)})
        if not seeds:
            print(f"{store}: no {reference} run yet, no report")
            continue
        by = {
            m: sorted((r for r in mine if r["method"] == m and r["seed"] in seeds), key=lambda r: r["seed"])
            for m in ORDER
        }
        by = {m: v for m, v in by.items() if len(v) == len(seeds)}
        ref = by[reference]
        payload: dict = {"storefront": store, "seeds": seeds, "reference": reference, "groups": groups, "methods": {}}
        rows, grows, drows = [], [], []
        for m, rs in by.items():
            entry = {
                "test": {k: [r["test"]["overall"][k] for r in rs] for k in KEYS},
                "dev": {k: [r["dev"]["overall"][k] for r in rs] for k in KEYS},
                "test_groups": {g: {k: [r["test"][g][k] for r in rs] for k in KEYS} for g in groups},
                "dev_groups": {g: {k: [r["dev"][g][k] for r in rs] for k in KEYS} for g in groups},
                "delta_vs_reference": None if m == reference else _delta(rs, ref, None, qtype),
                "group_delta_vs_reference": {
                    g: None if m == reference else _delta(rs, ref, set(t), qtype) for g, t in groups.items()
                },
                "gate_by_type": [r["gate_by_type"] for r in rs],
                "best_epoch": [r["extra"].get("best_epoch") for r in rs],
            }
            if m == "dev_type_gate":
                entry["type_weights"] = [r["extra"]["type_weights"] for r in rs]
                entry["dev_crossfit"] = {k: [r["dev_crossfit"]["overall"][k] for r in rs] for k in KEYS}
                entry["dev_crossfit_groups"] = {
                    g: {k: [r["dev_crossfit"][g][k] for r in rs] for k in KEYS} for g in groups
                }
            if m == "query_gate":
                sel = []
                for r in rs:
                    h = r.get("history") or []
                    allbest = max(h, key=lambda e: e["dev_ndcg@10"]) if h else {}
                    sel.append(
                        {
                            "selected_epoch": r["extra"].get("best_epoch"),
                            "dev_best_epoch": allbest.get("epoch"),
                            "dev_best_in_hold": allbest.get("gate_trained") is False,
                            "dev_selected": r["extra"].get("dev_ndcg@10"),
                            "dev_best": allbest.get("dev_ndcg@10"),
                        }
                    )
                entry["selection"] = sel
            payload["methods"][m] = entry
            t = entry["test"]
            rows.append([LABELS[m], *(_cell(t[k]) for k in KEYS), _fmt_delta(entry["delta_vs_reference"])])
            for g in groups:
                tg = entry["test_groups"][g]
                grows.append(
                    [
                        g,
                        LABELS[m],
                        _cell(tg["ndcg@10"]),
                        _cell(tg["roc_auc_in_type"]),
                        _fmt_delta(entry["group_delta_vs_reference"][g]),
                    ]
                )
            dv = entry.get("dev_crossfit", entry["dev"])
            dg = entry.get("dev_crossfit_groups", entry["dev_groups"])
            drows.append(
                [
                    LABELS[m],
                    _cell(dv["ndcg@10"]),
                    _cell(dv["roc_auc_in_type"]),
                    *(_cell(dg[g]["ndcg@10"]) for g in groups),
                ]
            )
        n = len(seeds)
        md = [
            f"# Fusion modes on the `{store}` storefront ({n} training seeds)",
            "",
            *run_header(meta),
            f"Storefront `{store}`: {products:,} products, data seed {data_seed} (`querylife data demo --storefront "
            f"{store}{seed_opt}`), split "
            f"by intent;{_shared_note(meta, store)} training seeds {', '.join(map(str, seeds))}; "
            "every method with the defaults except its "
            "fusion mode (title / image only also without the auxiliary terms, as `querylife eval --suite` runs "
            "them). The machine was shared by several agents (2 cores): times are not measurements. "
            "`dev_type_gate` reuses the `mean` run's vectors (its training is exactly mean fusion's; "
            "tests/test_gate_fit.py).",
            "",
            f"## Test split: mean ± std over seeds; Δ NDCG@10 vs `{reference}` (paired bootstrap over queries of "
            "the per-query NDCG@10 averaged over seeds, 1000 resamples)",
            "",
            md_table(["method", "NDCG@10", "ROC-AUC", "ROC-AUC in type", f"Δ NDCG@10 vs {reference} [95% CI]"], rows),
            "",
            "## Test split per type group (the queries whose own product type is in the group)",
            "",
            ", ".join(f"{g}: {', '.join(t)}" for g, t in groups.items()),
            "",
            md_table(["group", "method", "NDCG@10", "ROC-AUC in type", f"Δ NDCG@10 vs {reference} [95% CI]"], grows),
            "",
            "## Dev split (what the choices were made on)",
            "",
            "`dev_type_gate`'s dev numbers are cross-fitted (weights picked on one half of the dev intents, scored on "
            "the other half, both ways); the other methods' dev numbers are those of their selected epoch.",
            "",
            md_table(["method", "NDCG@10", "ROC-AUC in type", *(f"{g} NDCG@10" for g in groups)], drows),
            "",
        ]
        if "dev_type_gate" in by:
            # by group; within a group in the storefront's own order (a set's order changed with the string hash seed)
            listed = dict.fromkeys(t for g in groups.values() for t in g)
            types = sorted(listed, key=lambda t: [g for g in groups if t in groups[g]])
            wrows = []
            for t in types:
                grp = next(g for g in groups if t in groups[g])
                dtw = [r["extra"]["type_weights"].get(t, np.nan) for r in by["dev_type_gate"]]
                qgw = [r["gate_by_type"].get(t, np.nan) for r in by.get("query_gate", [])]
                wrows.append([t, grp, _cell(dtw, 2), _cell(qgw, 2)])
            md += [
                "## Image weight per product type",
                "",
                "`dev_type_gate`: the weight picked on dev; `query_type_gate`: the trained gate's mean weight on the "
                "test split's in-type candidates.",
                "",
                md_table(["type", "group", "dev_type_gate", "query_type_gate"], wrows),
                "",
            ]
        if "query_gate" in by:
            srows = [
                [
                    r["seed"],
                    s["selected_epoch"],
                    s["dev_best_epoch"],
                    "yes" if s["dev_best_in_hold"] else "no",
                    f"{s['dev_selected']:.4f}",
                    f"{s['dev_best']:.4f}",
                ]
                for r, s in zip(by["query_gate"], payload["methods"]["query_gate"]["selection"], strict=True)
            ]
            md += [
                "## Query-LIFE's gate: which epoch was selected",
                "",
                "`train.select_after_gate` (now on) selects among the epochs after the gate started (epochs 6-10 of "
                "10 with `gate_start_fraction=0.5`). Before, the dev-best epoch overall was selected; when it lay "
                "inside the hold the checkpoint was mean fusion.",
                "",
                md_table(
                    [
                        "seed",
                        "selected epoch",
                        "dev-best epoch (old rule)",
                        "inside the hold",
                        "dev NDCG@10 selected",
                        "dev NDCG@10 dev-best",
                    ],
                    srows,
                ),
                "",
            ]
        crit = criteria(by, reference, groups, qtype)
        dev_crit = criteria(by, reference, groups, qtype, split="dev")
        payload["criteria"], payload["dev_criteria"] = crit, dev_crit
        md += [
            "## Issue 14's acceptance lines for the reference mode (test split)",
            "",
            *criteria_table(crit, reference),
            "",
            "The same on the dev split (dev_type_gate's dev numbers here are not cross-fitted):",
            "",
            *criteria_table(dev_crit, reference, split="dev"),
            "",
        ]
        write_results(out, f"fusion_{store}{suffix}", md, {**meta, **payload})
        print("\n".join(md))
        combined[store] = payload
    if combined:
        write_results(
            out, f"fusion_storefronts{suffix}", combined_table(combined, meta), {**meta, "storefronts": combined}
        )


def criteria_table(crit: list[dict], reference: str, split: str = "test") -> list[str]:
    """Markdown rows of :func:`criteria`: reference - other with 95% intervals, and whether the line is met."""
    from querylife.report import md_table

    def fmt(d: dict) -> str:
        return f"{d['mean_diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"

    rows = [
        [c["scope"], LABELS[c["other"]], fmt(c["ndcg@10"]), fmt(c["roc_auc_in_type"]), "yes" if c["met"] else "**no**"]
        for c in crit
    ]
    return [
        f"`{reference}` minus the other method: NDCG@10 paired over {split} queries (bootstrap), ROC-AUC in type "
        "paired by seed (t interval). Met: both intervals reach 0 or above (not worse beyond the noise).",
        "",
        md_table(["scope", "versus", "Δ NDCG@10 [95% CI]", "Δ ROC-AUC in type [95% CI]", "met"], rows),
    ]


def combined_table(combined: dict, meta: dict) -> list[str]:
    """One table over the storefronts: test NDCG@10 / ROC-AUC in type, overall and per type group (for README)."""
    from benchkit import run_header

    from querylife.report import md_table

    stores = list(combined)
    header = ["method"] + [f"{s} NDCG@10" for s in stores] + [f"{s} ROC-AUC in type" for s in stores]
    rows = []
    for m in ORDER:
        if not all(m in combined[s]["methods"] for s in stores):
            continue
        t = [combined[s]["methods"][m]["test"] for s in stores]
        rows.append([LABELS[m], *(_cell(x["ndcg@10"]) for x in t), *(_cell(x["roc_auc_in_type"]) for x in t)])
    grows = []
    for s in stores:
        groups = combined[s]["groups"]
        for m in ORDER:
            if m not in combined[s]["methods"]:
                continue
            tg = combined[s]["methods"][m]["test_groups"]
            grows.append(
                [
                    s,
                    LABELS[m],
                    *(
                        f"{_cell(tg[g]['ndcg@10'])} / {_cell(tg[g]['roc_auc_in_type'])}"
                        for g in ("image-informative", "title-informative", "mixed")
                        if g in groups
                    ),
                ]
            )
    seeds = sorted({x for s in stores for x in combined[s]["seeds"]})
    return [
        "# Fusion modes across storefronts (test split)",
        "",
        *run_header(meta),
        f"Training seeds {', '.join(map(str, seeds))} (per storefront: see fusion_<storefront>.md); mean ± std over "
        "seeds.",
        "",
        md_table(header, rows),
        "",
        "Per type group, NDCG@10 / ROC-AUC in type:",
        "",
        md_table(["storefront", "method", "image-informative", "title-informative", "mixed"], grows),
        "",
        "Issue 14's acceptance lines, per storefront (details in each storefront's file):",
        "",
        *(
            line
            for s in stores
            if combined[s].get("criteria")
            for line in (f"**{s}**", "", *criteria_table(combined[s]["criteria"], combined[s]["reference"]), "")
        ),
    ]


if __name__ == "__main__":
    main()
