"""Run methods on one dataset's split and report them together: the engine behind ``querylife eval`` and the demo.

A :class:`Suite` trains each named method (:mod:`querylife.methods`) or scores a baseline / a trained checkpoint,
evaluates it on the test split with the dev-fitted decision (:mod:`querylife.evaluate`) and writes one report
(:mod:`querylife.report`). :func:`run_evaluation` is the whole ``querylife eval`` command;
:func:`run_seeds` is ``querylife eval --suite --seeds N``.

Example::

    suite = Suite(config, data, "runs/demo")
    runs = suite.run(["bm25", "zero_shot", "querylife", "mean"])
    suite.report(runs, title="demo")
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .baselines import bm25_scores, zero_shot_scores
from .config import ExperimentConfig, with_overrides
from .data.prepare import Dataset
from .evaluate import MethodRun, decide, evaluate_model, gate_weight_by_type, judge_results, metrics_by_group
from .genfilt.training import judge_with_shared_tower
from .methods import DEFAULT_METHODS, METHODS, MethodError, resolve_method, resolve_methods
from .model import QueryLifeModel
from .report import results_table_text, write_suite_report
from .scoring import FeatureCache
from .seeds import SeedSummary, aggregate_seeds, seeds_section, seeds_table_text, type_groups_of
from .towers import TextTower
from .train import Trainer


class Suite:
    """Train and evaluate a list of methods on one dataset; write one report.

    Method names may be old aliases (``full``, ``fn_*``): they run under their current names.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        data: Dataset,
        out_dir: str | Path,
        *,
        progress: bool = True,
        n_boot: int | None = None,
        log: Callable[[str], None] = print,
    ):
        self.config = config
        self.data = data
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.n_boot = config.eval.n_boot if n_boot is None else n_boot
        self.decision = {
            "method": config.eval.calibration,
            "threshold_rule": config.eval.threshold_rule,
            "target_precision": config.eval.target_precision,
        }
        self.log = log
        self.cache = FeatureCache()
        self._text_tower: TextTower | None = None

    def shared_text_tower(self) -> TextTower | None:
        """The frozen text tower shared by the suite's runs (None when the towers are trained)."""
        towers = self._towers()
        return towers[0] if towers else None

    def _towers(self) -> tuple[TextTower, None, None] | None:
        """The shared frozen text tower (the trainable vision tower is built per run, after its seed)."""
        tc = self.config.model.tower
        # A frozen text tower is a fixed function: load it once and share it between the runs.
        if tc.train_text_layers == 0 and tc.query_model is None and tc.vision_model != "same":
            if self._text_tower is None:
                self._text_tower = TextTower(tc.text_model, pooling=tc.pooling, max_length=tc.max_text_length)
            return self._text_tower, None, None
        return None

    def run_method(self, name: str) -> MethodRun:
        """Train (or score, for a baseline) method ``name`` and evaluate it on the test split."""
        method = METHODS[resolve_method(name)]
        data, start = self.data, time.time()
        dev, test = data.splits["dev"], data.splits["test"]
        if not method.trained:
            if method.name == "bm25":
                dev_s, test_s = bm25_scores(data, dev), bm25_scores(data, test)
            else:
                shell = QueryLifeModel(
                    self.config.model.model_copy(update={"product_types": []}), towers=self._towers()
                )
                dev_s = zero_shot_scores(data, dev, self.cache, shell)
                test_s = zero_shot_scores(data, test, self.cache, shell)
            result, scored, _ = decide(dev, dev_s, test, test_s, self.n_boot, self.config.train.seed, self.decision)
            return MethodRun(method.name, method.description, result, time.time() - start, scored)
        cfg = with_overrides(self.config, dict(method.overrides))
        towers, judge = judge_with_shared_tower(cfg, data, self._towers())  # the guide reuses the frozen tower
        trainer = Trainer(
            cfg,
            data,
            self.out_dir / "runs" / method.name,
            cache=self.cache,
            towers=towers,
            negative_mask_fn=judge,
            progress=self.progress,
        )
        trained = trainer.fit()
        result, scored, calibrator = evaluate_model(
            trained.model, data, cache=self.cache, n_boot=self.n_boot, seed=cfg.train.seed, decision=self.decision
        )
        best_dir = self.out_dir / "runs" / method.name / "best"
        if calibrator is not None and (best_dir / "config.json").is_file():
            # The decision eval just fitted on dev, saved beside the weights as `train` does: `serve` then gives
            # probabilities for any suite or demo run (no re-scoring, so nothing reported changes).
            from .calibrate import save_calibrator

            save_calibrator(calibrator, best_dir, len(data.splits["dev"]))
        extra = {
            "best_epoch": trained.best_epoch,
            "dev_ndcg@10": trained.best_dev_ndcg,
            "train_seconds": round(trained.seconds, 1),
            "temperature": 1 / float(trained.model.logit_scale.detach()),
            "calibrator": calibrator.to_dict() if calibrator else None,
            "false_negative_judge": cfg.train.false_negative_judge,
            "false_negatives": [h["false_negatives"] for h in trained.history if "false_negatives" in h] or None,
        }
        best = trained.history[trained.best_epoch - 1] if 0 < trained.best_epoch <= len(trained.history) else {}
        if "gate_trained" in best:
            extra["gate_trained"] = best["gate_trained"]
        if trained.query_offset is not None:  # the share of each query's offset its scores carry (0: raw)
            extra["offset_strength"] = trained.query_offset.strength
            extra["offset_chosen_by"] = trained.query_offset.chosen_by
        return MethodRun(
            method.name, method.description, result, time.time() - start, scored, gate_weight_by_type(scored), extra
        )

    def run_checkpoint(self, path: str | Path) -> MethodRun:
        """Evaluate a trained checkpoint directory; it is reported under its run's name (``RUN/best`` -> RUN).

        Raises :class:`~querylife.methods.MethodError` when the directory cannot be loaded.
        """
        path = Path(path)
        try:
            model = QueryLifeModel.from_pretrained(path)
        except (FileNotFoundError, ValueError) as err:
            raise MethodError(str(err)) from err
        result, scored, _ = evaluate_model(
            model,
            self.data,
            cache=self.cache,
            n_boot=self.n_boot,
            seed=self.config.train.seed,
            decision=self.decision,
        )
        name = path.parent.name if path.name == "best" else path.name
        return MethodRun(name, f"checkpoint {path}", result, 0.0, scored, gate_weight_by_type(scored))

    def run(self, methods: Sequence[str] = DEFAULT_METHODS) -> list[MethodRun]:
        """:meth:`run_method` for each of ``methods`` (names checked before anything runs), logging each result."""
        names = resolve_methods(methods)
        runs = []
        for i, name in enumerate(names, 1):
            self.log(f"[{i}/{len(names)}] {name}: {METHODS[name].description}")
            run = self.run_method(name)
            self.log(
                f"    test NDCG@10 {run.result.overall['ndcg@10']:.4f}  ROC-AUC {run.result.overall['roc_auc']:.4f}"
                f"  ({run.seconds:.0f}s)"
            )
            runs.append(run)
        return runs

    def judge_results(self, runs: list[MethodRun]):
        """:func:`querylife.evaluate.judge_results` for ``runs``, with the suite's shared text tower as the guide
        when it is the same model."""
        return judge_results(runs, self.config, self.data, text_tower=self.shared_text_tower())

    def report(
        self,
        runs: list[MethodRun],
        *,
        title: str,
        command: str = "",
        notes: list[str] | None = None,
        type_groups: dict[str, list[str]] | None = None,
        judges=None,
        extra_sections: dict[str, str] | None = None,
        extra_meta: dict[str, Any] | None = None,
    ) -> dict[str, Path]:
        """Write report.md / report.json / PNG plots and the scored test pairs; returns the paths.

        ``type_groups`` (group name -> product types, e.g. where the image carries the information) adds a table
        of each method's metrics over the queries of each group; ``judges`` (:meth:`judge_results`) the GenFilt
        table; ``extra_sections`` (heading -> Markdown) and ``extra_meta`` (into report.json) add what a caller
        measured besides.
        """
        numbers = metrics_by_group(runs, type_groups, seed=self.config.train.seed) if type_groups else None
        return write_suite_report(
            self.out_dir,
            runs,
            config=self.config,
            splits=self.data.splits,
            title=title,
            command=command,
            notes=notes,
            type_groups=type_groups,
            group_numbers=numbers,
            judges=judges,
            extra_sections=extra_sections,
            extra_meta=extra_meta,
        )

    @staticmethod
    def table(runs: list[MethodRun]) -> str:
        """The main metrics of ``runs`` as a fixed-width table for a terminal."""
        return results_table_text({r.name: r.result for r in runs})


def check_checkpoint_dir(path: str | Path) -> None:
    """Raise :class:`~querylife.methods.MethodError` unless ``path`` looks like a querylife checkpoint."""
    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise MethodError(f"{path} is not a querylife checkpoint (needs config.json and model.safetensors)")


@dataclass
class EvaluationResult:
    """What :func:`run_evaluation` ran and wrote."""

    runs: list[MethodRun]
    paths: dict[str, Path]
    table: str


def run_evaluation(
    config: ExperimentConfig,
    data: Dataset,
    out_dir: str | Path,
    *,
    methods: Sequence[str] | None = None,
    checkpoints: Sequence[str | Path] = (),
    baselines: bool = True,
    progress: bool = True,
    command: str = "",
    log: Callable[[str], None] = print,
) -> EvaluationResult:
    """``querylife eval``: train and evaluate ``methods`` (a suite), or evaluate trained ``checkpoints`` (after BM25
    and the zero-shot tower unless ``baselines`` is False); write the report (with the GenFilt table when a
    method trained with a false-negative judge) to ``out_dir``.

    Method names and checkpoint directories are checked before any work (:class:`~querylife.methods.MethodError`).
    """
    if methods is None and not checkpoints:
        raise MethodError("nothing to evaluate: give methods (a suite) or checkpoint directories")
    names = resolve_methods(methods) if methods is not None else ()
    for path in checkpoints if methods is None else ():
        check_checkpoint_dir(path)
    suite = Suite(config, data, out_dir, progress=progress, log=log)
    if methods is not None:
        runs = suite.run(names)
    else:
        runs = suite.run(["bm25", "zero_shot"]) if baselines else []
        runs += [suite.run_checkpoint(path) for path in checkpoints]
    paths = suite.report(runs, title="querylife evaluation", command=command, judges=suite.judge_results(runs))
    return EvaluationResult(runs, paths, Suite.table(runs))


@dataclass
class SeedsEvaluation:
    """What :func:`run_seeds` ran and wrote: the per-seed runs and their summary, the report paths, a text table."""

    summary: SeedSummary
    paths: dict[str, Path]
    table: str


def seed_type_groups(config: ExperimentConfig, runs_by_seed: dict[int, list[MethodRun]]) -> dict[str, list[str]]:
    """The type groups of a multi-seed report: a generated storefront's (``meta.json`` next to the catalogue:
    image- / title-informative / mixed), then every product type of the test queries on its own."""
    groups: dict[str, list[str]] = {}
    if config.data.catalog:
        meta = Path(config.data.catalog).parent / "meta.json"
        try:
            from .data.storefront import DemoStorefront

            groups.update(DemoStorefront.at(meta.parent).type_groups() if meta.exists() else {})
        except (KeyError, ValueError, OSError):  # not a generated storefront's meta.json
            groups = {}
    return {**groups, **type_groups_of(runs_by_seed)}


def run_seeds(
    config: ExperimentConfig,
    data: Dataset,
    out_dir: str | Path,
    *,
    methods: Sequence[str],
    n_seeds: int,
    progress: bool = True,
    command: str = "",
    log: Callable[[str], None] = print,
) -> SeedsEvaluation:
    """``querylife eval --suite --seeds N``: train each trained method of ``methods`` with ``train.seed`` = base,
    base + 1, ... (``n_seeds`` seeds; the split stays ``data.split_seed``'s), score the seed-independent baselines
    once, and write one report to ``out_dir``: the base seed's suite report plus a section with mean ± std over
    seeds and each method against ``querylife`` (:func:`querylife.seeds.aggregate_seeds`); report.json keeps every
    seed's numbers under ``meta.seeds``. Checkpoints go to ``out_dir/seed{S}/runs/{method}``.

    Example::

        result = run_seeds(config, data, "runs/modes", methods=["querylife", "mean", "concat"], n_seeds=5)
        print(result.table)
    """
    if n_seeds < 1:
        raise MethodError(f"--seeds must be at least 1, got {n_seeds}")
    names = resolve_methods(methods)
    out = Path(out_dir)
    base = config.train.seed
    seeds = list(range(base, base + n_seeds))
    suites: dict[int, Suite] = {}
    fixed: dict[str, MethodRun] = {}  # baselines: the training seed changes nothing, run once
    runs_by_seed: dict[int, list[MethodRun]] = {}
    for s in seeds:
        cfg = with_overrides(config, {"train.seed": s})
        suite = Suite(cfg, data, out / f"seed{s}", progress=progress, log=log)
        if suites:  # the frozen text tower and its features are the same on every seed
            first = suites[seeds[0]]
            suite.cache, suite._text_tower = first.cache, first._text_tower
        suites[s] = suite
        runs = []
        for i, name in enumerate(names, 1):
            if not METHODS[name].trained and name in fixed:
                runs.append(fixed[name])
                continue
            log(f"[seed {s}, {i}/{len(names)}] {name}: {METHODS[name].description}")
            run = suite.run_method(name)
            log(f"    test NDCG@10 {run.result.overall['ndcg@10']:.4f}  ROC-AUC {run.result.overall['roc_auc']:.4f}")
            if not METHODS[name].trained:
                fixed[name] = run
            runs.append(run)
        runs_by_seed[s] = runs
    first = suites[seeds[0]]
    groups = seed_type_groups(config, runs_by_seed)
    summary = aggregate_seeds(runs_by_seed, n_boot=max(first.n_boot, 1000), seed=base, groups=groups)
    base_runs = runs_by_seed[base]
    paths = write_suite_report(
        out,
        base_runs,
        config=config,
        splits=data.splits,
        title=f"querylife evaluation over {n_seeds} seeds",
        command=command,
        notes=[
            f'Every table but "Over {n_seeds} seeds" is seed {base}\'s alone (train.seed={base}); that section '
            f"aggregates seeds {seeds[0]}..{seeds[-1]}."
        ],
        judges=first.judge_results(base_runs),
        extra_sections={f"Over {n_seeds} seeds": seeds_section(summary, n_boot=max(first.n_boot, 1000))},
        extra_meta={"seeds": summary.to_dict()},
    )
    return SeedsEvaluation(summary, paths, seeds_table_text(summary))
