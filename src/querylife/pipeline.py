"""The demo pipeline: storefront -> data -> train every method -> evaluate -> report, in one call."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .config import ExperimentConfig, load_config, with_overrides
from .data.prepare import prepare_from_config
from .data.storefront import DEFAULT_STOREFRONT, DemoConfig, generate_demo
from .efficientnet import check_installed, is_efficientnet
from .evaluate import MethodRun
from .methods import DEFAULT_METHODS, NEEDS_DESCRIBER, resolve_methods
from .runinfo import command_line
from .suite import Suite
from .towers import vision_image_size


def demo_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """The demo's settings: the config file at ``path`` as it is, else the library defaults (whose vision tower is
    the frozen, ImageNet-pretrained EfficientNet-Lite0); then ``overrides`` (``KEY=VALUE``, so ``--set
    model.tower.vision_model=small_cnn`` trains the small CNN from scratch instead).

    Example::

        demo_config().model.tower.vision_model                                  # 'efficientnet-lite0'
        demo_config(None, ["model.tower.vision_model=small_cnn"]).model.tower.vision_model  # 'small_cnn'
    """
    return load_config(path, overrides or [])


@dataclass
class DemoResult:
    """Where the demo wrote its outputs and what it measured."""

    data_dir: Path
    report_dir: Path
    runs: list[MethodRun]
    seconds: float
    table: str


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    n_products: int = 3000,
    seed: int = 0,
    epochs: int | None = None,
    methods: tuple[str, ...] | list[str] = DEFAULT_METHODS,
    config: ExperimentConfig | None = None,
    n_boot: int | None = None,
    progress: bool = True,
    log=print,
    storefront: str = DEFAULT_STOREFRONT,
) -> DemoResult:
    """Generate (or reuse) the demo storefront in ``out_dir/data`` and write the report to ``out_dir/report``.

    ``storefront`` names another generated storefront (``home_books``, ``media_market``: see
    :mod:`querylife.data.storefront.registry`); the report groups its types as it does the demo's.
    """
    start = time.time()
    methods = list(resolve_methods(methods))  # unknown names fail here, before any work
    out_dir = Path(out_dir)
    config = config or demo_config()
    overrides: dict = {"train.seed": seed}
    if epochs is not None:
        overrides["train.epochs"] = epochs
    config = with_overrides(config, overrides)
    tower = config.model.tower
    if is_efficientnet(tower.vision_model):  # missing weight packages stop here, with the install line
        check_installed(tower.vision_model)
    # Photos are rendered at the vision tower's input size (224 px for EfficientNet-Lite0, 64 for the small CNN), so
    # a pretrained tower sees them at its own resolution and not upsampled from 64 px.
    store_config = DemoConfig(
        n_products=n_products, seed=seed, storefront=storefront, image_size=vision_image_size(config.model.tower)
    )  # unknown storefront names fail here
    log(f"1/3 {storefront} storefront ({n_products} products, seed {seed}) in {out_dir / 'data'}")
    store = generate_demo(out_dir / "data", store_config, progress=progress)
    config = with_overrides(config, store.config_overrides())  # split by intent (see DemoStorefront)
    data = prepare_from_config(config, progress=progress)
    sizes = ", ".join(f"{k} {v['query'].nunique()} queries / {len(v)} pairs" for k, v in data.splits.items())
    log(f"    {len(data.catalog)} products, {len(data.pairs)} labelled pairs; {sizes}")
    config, describer_note = _describe_for_genfilt(config, data, out_dir, methods, progress, log)
    log(f"2/3 training and evaluating {len(methods)} methods")
    report_dir = out_dir / "report"
    suite = Suite(config, data, report_dir, progress=progress, n_boot=n_boot, log=log)
    runs = suite.run(methods)
    log("3/3 writing the report")
    judges = suite.judge_results(runs)
    notes = [
        "Test split only for the numbers above; model selection (epochs) and the relevance threshold use dev.",
        "The storefront's group_id (duplicate listings) is ground truth: never used in training, only to measure the "
        "false-negative judges (mask_* rows: per-epoch masked counts and precision in report.json, meta.methods).",
        describer_note,
        f"Whole demo: {time.time() - start:.0f} s.",
    ]
    command = command_line()
    groups = store.type_groups()
    suite.report(
        runs,
        title="querylife demo: Query-LIFE vs baselines and ablations"
        + ("" if storefront == DEFAULT_STOREFRONT else f" (storefront {storefront})"),
        command=command,
        notes=notes,
        type_groups=groups,
        judges=judges,
        extra_meta={"genfilt": {"judges": judges.entries, "describer": describer_note}},
    )
    return DemoResult(store.out_dir, report_dir, runs, time.time() - start, Suite.table(runs))


def _describe_for_genfilt(config, data, out_dir: Path, methods: list[str], progress: bool, log):
    """Stage 1 of GenFilt for the demo, when a generative describer is configured (``genfilt.model``).

    Descriptions go to ``out_dir/genfilt/`` (reused by later runs: the cache is keyed by product content, describer
    and prompt version) and the GenFilt rows (mask_genfilt_descriptions, mask_genfilt_generative) join the methods.
    Without a describer those rows are left out and the report says so: no generative model ships with querylife or
    runs offline here, and ground-truth attributes are never passed off as a model's output.
    """
    g = config.genfilt
    if not g.model:
        for name in NEEDS_DESCRIBER:
            if name in methods:
                methods.remove(name)
        return config, (
            "GenFilt rows with generated descriptions (mask_genfilt_descriptions, mask_genfilt_generative) were not "
            "run: no generative describer is configured. Run them with `querylife demo --set genfilt.model=MODEL "
            "--set genfilt.base_url=http://HOST:PORT/v1` (any OpenAI-compatible server), `--set genfilt.describer=hf "
            "--set genfilt.model=LOCAL_DIR`, or `--set genfilt.describer=local --set genfilt.model=smollm2-135m` (the "
            "genfilt-local extra; measured too weak to help: benchmarks/results/genfilt_smollm2.md)."
        )
    from .genfilt import DescriptionCache, describe_catalog, products_from_catalog
    from .genfilt.describe import make_describer

    gdir = out_dir / "genfilt"
    defaults = type(g)()
    overrides = {}
    if g.cache == defaults.cache:
        overrides["genfilt.cache"] = str(gdir / "descriptions.jsonl")
    if g.answers == defaults.answers:
        overrides["genfilt.answers"] = str(gdir / "answers.jsonl")
    config = with_overrides(config, overrides) if overrides else config
    g = config.genfilt
    describer = make_describer(config)
    check = getattr(describer, "check", None)
    if check is not None:
        check()
    n = len(data.catalog)
    log(f"    GenFilt stage 1: describing {n} products with {describer.name} (prompt {g.prompt.version})")
    summary = describe_catalog(
        products_from_catalog(data.catalog),
        describer,
        g.prompt,
        DescriptionCache(g.cache),
        batch_size=g.batch_size,
        progress=progress,
    )
    log("    " + summary.to_text().replace("\n", "\n    "))
    for name in NEEDS_DESCRIBER:
        if name not in methods:
            methods.append(name)
    return config, (
        f"GenFilt descriptions were generated by {describer.name} (prompt {g.prompt.version}; cache {g.cache}); "
        f"the generative judge asks the same model ({g.judge_prompt.version} question). {summary.to_text()}"
    )
