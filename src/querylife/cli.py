"""The ``querylife`` command line: a thin layer over the library (each command maps to one library call)."""

from __future__ import annotations

import json
import os
import warnings
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from .methods import MethodError, methods_help, parse_methods
from .runinfo import command_line

# Weights come from local directories or packages; never reach for a model hub unless the user asked.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(
    help="querylife: query-aware multimodal relevance for e-commerce search (Query-LIFE).\n\n"
    "Example: querylife demo --out runs/demo",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Validate data and generate the demo storefront.\n\n"
    "Example: querylife data check catalog.parquet pairs.parquet",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")
genfilt_app = typer.Typer(
    help="GenFilt: describe products with a generative model, judge in-batch false negatives, measure the masks.\n\n"
    "Example: querylife genfilt evaluate --catalog data/demo/catalog.parquet --pairs data/demo/pairs.parquet",
    no_args_is_help=True,
)
app.add_typer(genfilt_app, name="genfilt")


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _methods(text: str | None) -> tuple[str, ...]:
    """``--methods`` as method names; an old name gets a one-line note (not a Python warning with a traceback)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FutureWarning)
        try:
            chosen = parse_methods(text)
        except MethodError as err:
            _fail(str(err))
    for w in caught:
        typer.secho(f"note: {w.message}", fg=typer.colors.YELLOW, err=True)
    return chosen


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


STOREFRONT_HELP = (
    "Which generated storefront: demo (clothing and electronics), home_books (home goods, books, memory cards; "
    "Spanish), media_market (text-heavy media marketplace; French). docs/DEMO_DATA.md describes each."
)


def _check_storefront(name: str) -> None:
    from .data.storefront import STOREFRONTS

    if name not in STOREFRONTS:
        _fail(f"unknown storefront {name!r}; known: {', '.join(STOREFRONTS)}")


@app.command(epilog="Example: querylife demo --out runs/demo --products 3000 --seed 0")
def demo(
    out: Annotated[Path, typer.Option(help="Output directory (data/ and report/ go inside).")] = Path("runs/demo"),
    products: Annotated[int, typer.Option(help="Number of products in the demo storefront.")] = 3000,
    seed: Annotated[int, typer.Option(help="Seed for the storefront and training.")] = 0,
    epochs: Annotated[int | None, typer.Option(help="Training epochs per method (default: the config's).")] = None,
    methods: Annotated[
        str | None, typer.Option(help=f"Comma-separated subset of methods (default: all). {methods_help()}")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML/JSON experiment config.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Config override, e.g. --set train.lr=3e-4.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
    storefront: Annotated[str, typer.Option(help=STOREFRONT_HELP)] = "demo",
) -> None:
    """Run the whole pipeline on the bundled demo storefront: generate, train, evaluate, report."""
    _quiet_transformers()
    from .config import ConfigError
    from .pipeline import demo_config, run_demo
    from .towers import TowerLoadError

    try:
        cfg = demo_config(config, set_ or [])
    except ConfigError as err:
        _fail(str(err))
    chosen = _methods(methods)
    _check_storefront(storefront)
    try:
        result = run_demo(
            out,
            n_products=products,
            seed=seed,
            epochs=epochs,
            methods=chosen,
            config=cfg,
            progress=not quiet,
            storefront=storefront,
        )
    except TowerLoadError as err:  # e.g. EfficientNet-Lite0 installed without its weight packages
        _fail(str(err))
    typer.echo(result.table)
    typer.echo(f"report: {result.report_dir / 'report.md'} (also report.json and PNG plots)")
    typer.echo(f"done in {result.seconds:.0f} s")


@data_app.command(
    "demo",
    epilog="Examples:\n\n  querylife data demo --out data/demo --seed 0 --products 3000\n\n"
    "  querylife data demo --out data/home_books --storefront home_books",
)
def data_demo(
    out: Annotated[Path, typer.Option(help="Directory to write catalog.parquet, pairs.parquet, images/.")],
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 0,
    products: Annotated[int, typer.Option(help="Number of products.")] = 3000,
    image_size: Annotated[
        int | None,
        typer.Option(help="Image side in pixels (default: the default vision tower's input size, 224; the small CNN "
                     "reads 64)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Regenerate even if the directory holds this storefront.")] = False,
    figures: Annotated[Path | None, typer.Option(help="Also write the docs' figures into this folder.")] = None,
    storefront: Annotated[str, typer.Option(help=STOREFRONT_HELP)] = "demo",
) -> None:
    """Generate the procedural demo storefront (catalogue, rendered images, queries, graded labels)."""
    import time

    from .data.storefront import DemoConfig, generate_demo, render_attribute_sheet, render_contact_sheet

    start = time.time()
    _check_storefront(storefront)
    if image_size is None:  # rendered at the size the default tower reads, as `querylife demo` renders them
        from .towers import TowerConfig, vision_image_size

        image_size = vision_image_size(TowerConfig())
    try:
        config = DemoConfig(n_products=products, seed=seed, image_size=image_size, storefront=storefront)
    except ValueError as err:  # too few products for the storefront's types, an image size out of range
        _fail(f"querylife data demo: {err}")
    existed = (out / "meta.json").exists()
    store = generate_demo(out, config, overwrite=overwrite)
    meta = json.loads(store.meta_path.read_text())
    reused = existed and not overwrite and store.meta_path.stat().st_mtime < start
    verb = "reused" if reused else "wrote"
    typer.echo(f"{verb} {store.catalog_path}, {store.pairs_path} and images/ ({json.dumps(meta.get('counts', {}))})")
    if figures is not None:
        typer.echo(f"wrote {render_contact_sheet(store, figures / f'{storefront}_examples.png')}")
        sheet = render_attribute_sheet(
            figures / f"{storefront}_attributes.png", size=image_size, storefront=config.spec
        )
        typer.echo(f"wrote {sheet}")


COLUMN_HELP = "Your column for one of our fields, e.g. --column image_path=img (repeatable; data.columns)."


@data_app.command(
    "check",
    epilog="Examples:\n\n  querylife data check data/demo/catalog.parquet data/demo/pairs.parquet\n\n"
    "  querylife data check my_catalog.csv my_pairs.csv --column image_path=picture --column product_id=sku\n\n"
    "  querylife data check ../shared/data/crowdflower/search_relevance.csv --format crowdflower",
)
def data_check(
    catalog: Annotated[Path, typer.Argument(help="Catalogue file, or a data set file / directory.")],
    pairs: Annotated[Path | None, typer.Argument(help="Labelled pairs file (query, product_id, label).")] = None,
    format_: Annotated[str, typer.Option("--format", help="auto | querylife | crowdflower | esci | wands")] = "auto",
    label_scheme: Annotated[
        str | None, typer.Option(help="auto | exact_partial_irrelevant | esci | binary | graded (default: config's)")
    ] = None,
    column: Annotated[list[str] | None, typer.Option("--column", help=COLUMN_HELP)] = None,
    images: Annotated[bool, typer.Option(help="Decode every image to find corrupt files.")] = True,
    config: Annotated[Path | None, typer.Option(help="YAML/JSON experiment config (its data section).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Config override, e.g. --set data.split_by=intent.")
                    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.")] = None,
) -> None:
    """Validate a catalogue and its labelled pairs (or a data set) as training would read them; print a report.

    Exit 1 on problems (rows or images the loaders reject).

    Warnings (e.g. a text-only catalogue) are listed first and do not change the exit code.
    """
    cfg = _config(config, set_, column)
    from .checkpoint import atomic_write_text
    from .data.errors import DataError
    from .data.formats import detect_format, querylife_dir_files
    from .data.image_urls import ImageFetch
    from .data.validation import check_dataset, check_format

    d = cfg.data
    scheme = label_scheme or d.label_scheme
    try:
        if pairs is None and catalog.is_dir() and format_ in ("auto", "querylife") and (
            format_ == "querylife" or detect_format(catalog) == "querylife"
        ):
            catalog, pairs = querylife_dir_files(catalog)  # the same check as for the two files
        if pairs is not None and format_ in ("auto", "querylife"):
            report = check_dataset(
                catalog, pairs, label_scheme=scheme, check_images=images, progress=True, columns=dict(d.columns),
                official_split=d.official_split, split=d.split, split_seed=d.split_seed, split_by=d.split_by,
                max_title_chars=d.max_title_chars, images=ImageFetch.from_config(d),
            )
            text, payload, ok = report.to_markdown(), report.to_dict(), report.ok()
        else:
            text, payload, ok = check_format(
                catalog, format=format_, label_scheme=scheme, split=d.split, split_seed=d.split_seed,
                split_by=d.split_by, official_split=d.official_split, max_title_chars=d.max_title_chars,
                locale=d.locale, version=d.version, esci_gains=d.esci_gains, relevant_min=d.relevant_min,
            )
    except DataError as err:
        _fail(str(err))
    typer.echo(text)
    if json_out:
        atomic_write_text(json_out, json.dumps(payload, indent=2, default=str) + "\n")
    raise typer.Exit(0 if ok else 1)


def _column_overrides(columns: list[str] | None) -> list[str]:
    """``--column image_path=img`` -> ``data.columns.image_path="img"`` (quoted: a column named 2024 stays text)."""
    out = []
    for item in columns or []:
        field, sep, name = item.partition("=")
        if not sep or not field.strip():
            _fail(f"--column {item!r}: write FIELD=COLUMN, e.g. --column image_path=img (an empty COLUMN means none)")
        out.append(f"data.columns.{field.strip()}={json.dumps(name)}")
    return out


def _config(config: Path | None, overrides: list[str] | None, columns: list[str] | None = None, extra=(), *,
            tree: dict | None = None, source: str | None = None):
    items = [*(overrides or []), *_column_overrides(columns), *extra]  # a malformed --column fails before imports
    from .config import ConfigError, load_config

    try:
        return load_config(config, items, tree=tree, source=source)
    except ConfigError as err:
        _fail(str(err))


def _load(
    config: Path | None,
    overrides: list[str] | None,
    catalog: Path | None,
    pairs: Path | None,
    data: Path | None = None,
    fmt: str | None = None,
    columns: list[str] | None = None,
    *,
    tree: dict | None = None,
    source: str | None = None,
):
    extra = [f"data.{key}={value}" for key, value in (("catalog", catalog), ("pairs", pairs), ("path", data),
                                                       ("format", fmt)) if value]
    # The command line wins over the config: --data replaces its catalog / pairs, --catalog / --pairs its path.
    if data and (catalog or pairs):
        _fail("give --data DIR or --catalog FILE --pairs FILE, not both")
    if data:
        extra += ["data.catalog=null", "data.pairs=null"]
    elif catalog or pairs:
        extra.append("data.path=null")
    cfg = _config(config, overrides, columns, extra, tree=tree, source=source)
    if not cfg.data.path and (not cfg.data.catalog or not cfg.data.pairs):
        _fail(
            "no data: give --catalog and --pairs, or --data PATH for a public data set "
            "(or data.catalog / data.pairs / data.path in the config)"
        )
    return cfg


def _dataset(cfg, progress: bool = True):
    """Load the data; the loading notes (columns used, split rule, warnings) go to stderr before any work."""
    from .data.errors import DataError
    from .data.prepare import prepare_from_config

    def say(line: str) -> None:
        warn = line.startswith("warning:")
        typer.secho(line, err=True, fg=typer.colors.YELLOW if warn else None)

    try:
        return prepare_from_config(cfg, progress=progress, log=say)
    except (DataError, FileNotFoundError, ValueError) as err:
        _fail(str(err))


@app.command(
    epilog="Example: querylife train --catalog data/demo/catalog.parquet --pairs data/demo/pairs.parquet "
    "--out runs/exp1 --set train.epochs=10"
)
def train(
    out: Annotated[Path, typer.Option(help="Run directory (best/ and last/ checkpoints go inside).")],
    config: Annotated[Path | None, typer.Option(help="YAML/JSON experiment config.")] = None,
    catalog: Annotated[Path | None, typer.Option(help="Catalogue file (overrides data.catalog).")] = None,
    pairs: Annotated[Path | None, typer.Option(help="Labelled pairs file (overrides data.pairs).")] = None,
    data: Annotated[Path | None, typer.Option(help="A public data set (CrowdFlower CSV, ESCI/WANDS dir).")] = None,
    format_: Annotated[str | None, typer.Option("--format", help="auto|querylife|crowdflower|esci|wands")] = None,
    column: Annotated[list[str] | None, typer.Option("--column", help=COLUMN_HELP)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Config override, e.g. --set train.lr=3e-4.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last if a previous run was interrupted.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
    nproc: Annotated[
        int,
        typer.Option(
            min=1,
            help="Train with N processes on this host (torchrun, DDP; train.batch_size is per process; "
            "docs/SCALE.md). 1: one process.",
        ),
    ] = 1,
) -> None:
    """Train a Query-LIFE model; the best checkpoint on dev NDCG@10 is written to OUT/best."""
    if nproc > 1:
        options = dict(out=out, config=config, catalog=catalog, pairs=pairs, data=data, format_=format_)
        _launch_ranks(nproc, options | dict(column=column, set_=set_, resume=resume, quiet=quiet))
        return
    _quiet_transformers()
    from .distributed import init_distributed, shutdown
    from .genfilt.training import judge_with_shared_tower
    from .towers import TowerLoadError
    from .train import Trainer

    cfg = _load(config, set_, catalog, pairs, data, format_, column)
    dist = init_distributed(cfg.train)  # None unless this is one of several torchrun ranks
    main = dist is None or dist.is_main
    dataset = _dataset(cfg, progress=not quiet and main)
    if main and dataset.bad_rows is not None and dataset.bad_rows.total:
        typer.echo(dataset.bad_rows.summary())
    try:
        towers, judge = judge_with_shared_tower(cfg, dataset)
        trainer = Trainer(cfg, dataset, out, towers=towers, negative_mask_fn=judge, progress=not quiet, dist=dist)
        result = trainer.fit(resume=resume)
    except TowerLoadError as err:
        _fail(str(err))
    finally:
        shutdown()
    if main:
        typer.echo(f"best epoch {result.best_epoch}: dev NDCG@10 {result.best_dev_ndcg:.4f}; checkpoint {out / 'best'}")
        _calibrate_best(result.model, dataset, cfg, out / "best")


def _launch_ranks(nproc: int, options: dict[str, object]) -> None:
    """``querylife train --nproc N``: the same training as N torchrun ranks on this host (``python -m
    querylife.train`` with these options on each)."""
    import subprocess

    from .distributed import launch_command

    args: list[str] = []
    for name, value in options.items():
        flag = "--" + name.rstrip("_").replace("_", "-")
        if isinstance(value, bool):
            args += [flag] if value else []
        elif isinstance(value, list):
            for item in value:
                args += [flag, str(item)]
        elif value is not None:
            args += [flag, str(value)]
    code = subprocess.call(launch_command(nproc, args))
    if code:
        raise typer.Exit(code)


def _calibrate_best(model, dataset, cfg, checkpoint: Path) -> None:
    """The served decision: calibrator.json fitted on dev beside the best weights (querylife.calibrate)."""
    from .calibrate import calibrate_model

    calibration = calibrate_model(model, dataset, cfg.eval, checkpoint, batch_size=cfg.train.eval_batch_size)
    typer.echo(calibration.summary())


@app.command(
    epilog="Examples:\n\n  querylife calibrate --checkpoint runs/exp1/best\n\n  querylife calibrate --checkpoint "
    "runs/exp1/best --catalog data/demo/catalog.parquet --pairs data/demo/pairs.parquet "
    "--set eval.threshold_rule=target_precision --set eval.target_precision=0.95",
)
def calibrate(
    checkpoint: Annotated[Path, typer.Option(help="Trained checkpoint dir; calibrator.json is written into it.")],
    config: Annotated[
        Path | None, typer.Option(help="YAML/JSON experiment config (default: the one the checkpoint trained with).")
    ] = None,
    catalog: Annotated[Path | None, typer.Option(help="Catalogue file (default: the training data).")] = None,
    pairs: Annotated[Path | None, typer.Option(help="Labelled pairs file (default: the training data).")] = None,
    data: Annotated[Path | None, typer.Option(help="A public data set (CrowdFlower CSV, ESCI/WANDS dir).")] = None,
    format_: Annotated[str | None, typer.Option("--format", help="auto|querylife|crowdflower|esci|wands")] = None,
    column: Annotated[list[str] | None, typer.Option("--column", help=COLUMN_HELP)] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Config override, e.g. --set eval.calibration=isotonic.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Fit the relevance decision (calibrated probability + threshold) on the dev split, as `eval` does, and save it
    as CHECKPOINT/calibrator.json for `serve`.

    The split and eval settings default to those the checkpoint was trained with (its summary.json), so dev is the
    dev split training early-stopped on; --config replaces them, --set overrides single keys.
    """
    _quiet_transformers()
    from .calibrate import calibrate_checkpoint
    from .checkpoint import trained_config
    from .suite import check_checkpoint_dir

    try:
        check_checkpoint_dir(checkpoint)
    except MethodError as err:
        _fail(str(err))
    try:
        trained_with = trained_config(checkpoint) if config is None else None
    except ValueError as err:
        _fail(str(err))
    cfg = _load(config, set_, catalog, pairs, data, format_, column, tree=trained_with,
                source=f"{checkpoint}/summary.json (the config it was trained with)" if trained_with else None)
    dataset = _dataset(cfg, progress=not quiet)
    try:
        result = calibrate_checkpoint(checkpoint, dataset, cfg.eval, batch_size=cfg.train.eval_batch_size)
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
    typer.echo(result.summary())
    raise typer.Exit(0 if result.calibrator is not None else 1)


@app.command(
    epilog="Examples:\n\n  querylife serve --checkpoint runs/exp1/best --store runs/exp1/store\n\n"
    "  QUERYLIFE_API_KEY=... querylife serve --checkpoint runs/exp1/best --store runs/exp1/store --host 0.0.0.0 "
    "--port 8080 --api-key-env QUERYLIFE_API_KEY --workers 2 --set max_candidates=500",
)
def serve(
    checkpoint: Annotated[Path, typer.Option(help="Trained checkpoint dir (calibrator.json inside gives decisions).")],
    store: Annotated[Path, typer.Option(help="Embedding store written by `querylife embed` (and its index).")],
    host: Annotated[str, typer.Option(help="Interface to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (each loads the model and the store).")] = 1,
    api_key_env: Annotated[
        str | None, typer.Option(help="Environment variable holding the API key (the key never goes on the command "
                                      "line); clients send Authorization: Bearer KEY or X-API-Key: KEY.")
    ] = None,
    serve_config: Annotated[Path | None, typer.Option(help="YAML/JSON service settings (limits, batcher).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Service setting, e.g. --set max_candidates=500.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    onnx: Annotated[
        Path | None, typer.Option(help="ONNX query encoder from `querylife export-onnx` (queries via onnxruntime).")
    ] = None,
) -> None:
    """Serve relevance, search and embeddings over HTTP (FastAPI + uvicorn; docs/SERVING.md).

    POST /v1/relevance, /v1/search, /v1/embed; GET /healthz, /readyz, /metrics; the API at /docs.
    """
    from .serve.config import load_serve_config
    from .serve.run import serve as run_server
    from .suite import check_checkpoint_dir

    try:
        check_checkpoint_dir(checkpoint)
    except MethodError as err:
        _fail(str(err))
    if not store.exists():
        _fail(f"{store}: no such embedding store (write one with `querylife embed --checkpoint {checkpoint} ...`)")
    if workers < 1:
        _fail(f"--workers must be at least 1, got {workers}")
    if onnx is not None and not onnx.is_file():
        _fail(f"--onnx {onnx}: no such file (write it with `querylife export-onnx --checkpoint {checkpoint}`)")
    try:
        settings = load_serve_config(serve_config, set_ or [])
        if api_key_env:
            settings = settings.model_copy(update={"api_key_env": api_key_env})
        _quiet_transformers()
        run_server(checkpoint, store, settings, host=host, port=port, workers=workers, log_level=log_level,
                   onnx=onnx)
    except ValueError as err:
        _fail(str(err))


@app.command(
    "eval",
    epilog="Examples:\n\n  querylife eval --checkpoint runs/exp1/best --catalog data/demo/catalog.parquet "
    "--pairs data/demo/pairs.parquet --out runs/exp1/eval\n\n  querylife eval --suite --catalog "
    "data/demo/catalog.parquet --pairs data/demo/pairs.parquet --out runs/ablations\n\n  querylife eval --suite "
    "--seeds 5 --methods querylife,mean,concat --catalog data/demo/catalog.parquet --pairs data/demo/pairs.parquet "
    "--out runs/modes",
)
def eval_(
    out: Annotated[Path, typer.Option(help="Report directory (report.md, report.json, PNG plots).")],
    checkpoint: Annotated[list[Path] | None, typer.Option(help="Trained checkpoint dir(s) to evaluate.")] = None,
    suite: Annotated[bool, typer.Option(help="Train and evaluate every method (baselines + ablations).")] = False,
    methods: Annotated[
        str | None, typer.Option(help=f"Comma-separated methods for --suite (default: all). {methods_help()}")
    ] = None,
    baselines: Annotated[bool, typer.Option(help="Also evaluate BM25 and the zero-shot tower.")] = True,
    config: Annotated[Path | None, typer.Option(help="YAML/JSON experiment config (data + split).")] = None,
    catalog: Annotated[Path | None, typer.Option(help="Catalogue file.")] = None,
    pairs: Annotated[Path | None, typer.Option(help="Labelled pairs file.")] = None,
    data: Annotated[Path | None, typer.Option(help="A public data set (CrowdFlower CSV, ESCI/WANDS dir).")] = None,
    format_: Annotated[str | None, typer.Option("--format", help="auto|querylife|crowdflower|esci|wands")] = None,
    column: Annotated[list[str] | None, typer.Option("--column", help=COLUMN_HELP)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Config override.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
    seeds: Annotated[
        int,
        typer.Option(
            min=1,
            help="With --suite: train each method with N training seeds (train.seed, +1, ...; same split) and report "
            "mean ± std and paired intervals against querylife over the seeds.",
        ),
    ] = 1,
) -> None:
    """Evaluate checkpoints (or the whole method suite) on the test split with bootstrap CIs; write a report."""
    _quiet_transformers()
    from .suite import check_checkpoint_dir, run_evaluation
    from .towers import TowerLoadError

    if not checkpoint and not suite:
        _fail("give --checkpoint DIR (one or more) or --suite")
    if seeds > 1 and not suite:
        _fail("--seeds needs --suite (a checkpoint was trained with one seed)")
    chosen = _methods(methods) if suite else None  # fail before any work, not after the baselines ran
    try:
        for path in checkpoint or []:
            check_checkpoint_dir(path)
    except MethodError as err:
        _fail(str(err))
    cfg = _load(config, set_, catalog, pairs, data, format_, column)
    dataset = _dataset(cfg, progress=not quiet)
    if seeds > 1:
        from .suite import run_seeds

        try:
            many = run_seeds(cfg, dataset, out, methods=chosen or (), n_seeds=seeds, progress=not quiet,
                             command=command_line())
        except (MethodError, TowerLoadError) as err:
            _fail(str(err))
        typer.echo(many.table)
        typer.echo(f"report: {many.paths.get('markdown', out)}")
        return
    try:
        result = run_evaluation(
            cfg,
            dataset,
            out,
            methods=chosen,
            checkpoints=checkpoint or [],
            baselines=baselines,
            progress=not quiet,
            command=command_line(),
        )
    except (MethodError, TowerLoadError) as err:
        _fail(str(err))
    typer.echo(result.table)
    typer.echo(f"report: {result.paths.get('markdown', out)}")


@genfilt_app.command(
    "describe",
    epilog="Examples:\n\n  querylife genfilt describe --catalog data/demo/catalog.parquet "
    "--set genfilt.base_url=http://127.0.0.1:8000/v1 --set genfilt.model=qwen2-vl\n\n"
    "  querylife genfilt describe --catalog data/demo/catalog.parquet --set genfilt.describer=hf "
    "--set genfilt.model=/models/smolvlm --set genfilt.hf_kind=vision\n\n"
    "  querylife genfilt describe --queries --pairs data/demo/pairs.parquet --set genfilt.model=qwen2-vl",
)
def genfilt_describe(
    catalog: Annotated[Path | None, typer.Option(help="Catalogue file (overrides data.catalog).")] = None,
    queries: Annotated[
        bool, typer.Option("--queries", help="Describe the queries' intent (from --pairs) instead of the products.")
    ] = False,
    pairs: Annotated[Path | None, typer.Option(help="Labelled pairs, for --queries (overrides data.pairs).")] = None,
    cache: Annotated[Path | None, typer.Option(help="Description cache (JSONL; overrides genfilt.cache).")] = None,
    limit: Annotated[int | None, typer.Option(help="Describe at most this many new products this run.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML/JSON experiment config.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Config override, e.g. --set genfilt.model=NAME.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    ray: Annotated[bool, typer.Option("--ray", help=RAY_HELP)] = False,
    ray_address: Annotated[str | None, typer.Option(help=RAY_ADDRESS_HELP)] = None,
    ray_workers: Annotated[int | None, typer.Option(help=RAY_WORKERS_HELP)] = None,
) -> None:
    """Describe every product (or, with --queries, every query's intent) with a generative model into a resumable
    cache (stage 1 of GenFilt)."""
    from .config import ConfigError, load_config
    from .data.errors import DataError
    from .genfilt import DescribeError
    from .genfilt.describe import describe_from_config

    ray_options = _ray_options(ray, ray_address, ray_workers)
    try:
        cfg = load_config(config, set_ or [])
    except ConfigError as err:
        _fail(str(err))
    if cfg.genfilt.describer in ("hf", "local"):
        _quiet_transformers()
    try:
        summary = describe_from_config(
            cfg,
            queries=queries,
            path=pairs if queries else catalog,
            cache=cache,
            limit=limit,
            progress=not quiet,
            log=typer.echo,
            ray=ray_options,
        )
    except (ValueError, DataError, DescribeError) as err:
        _fail(str(err))
    typer.echo(summary.to_text())
    for pid, message in summary.examples:
        typer.echo(f"  {pid}: {message}")
    raise typer.Exit(1 if summary.stopped else 0)


@genfilt_app.command(
    "evaluate",
    epilog="Example: querylife genfilt evaluate --catalog data/demo/catalog.parquet --pairs data/demo/pairs.parquet "
    "--out runs/genfilt",
)
def genfilt_evaluate(
    out: Annotated[Path, typer.Option(help="Directory for genfilt_masks.md / .json.")] = Path("runs/genfilt"),
    catalog: Annotated[Path | None, typer.Option(help="Catalogue file (overrides data.catalog).")] = None,
    pairs: Annotated[Path | None, typer.Option(help="Labelled pairs file (overrides data.pairs).")] = None,
    cache: Annotated[Path | None, typer.Option(help="Description cache: adds the GenFilt similarity judge.")] = None,
    describer: Annotated[str | None, typer.Option(help="Describer name in the cache (default: the newest).")] = None,
    batches: Annotated[int, typer.Option(help="Training batches to sample.")] = 40,
    config: Annotated[Path | None, typer.Option(help="YAML/JSON experiment config.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Config override.")] = None,
) -> None:
    """Precision and recall of each judge's false-negative mask against known equivalents, on training batches.

    Known equivalents: products of the same group_id (the demo's duplicate listings) and products labelled
    positive for the same query. Judges: duplicate title and the GIST-style guide always; with --cache the GenFilt
    similarity judge on the descriptions; with --cache and genfilt.model also GenFilt + the generative judge.
    """
    _quiet_transformers()
    from .genfilt.base import DescribeError
    from .genfilt.quality import compare_judges
    from .report import mask_table_text, write_mask_report

    cfg = _load(config, set_, catalog, pairs)
    data = _dataset(cfg, progress=False)
    try:
        comparison = compare_judges(cfg, data, cache=cache, describer=describer, n_batches=batches)
    except (FileNotFoundError, ValueError, DescribeError) as err:
        _fail(str(err))
    paths = write_mask_report(out, comparison, command=command_line())
    typer.echo(mask_table_text(comparison))
    typer.echo(f"descriptions: {comparison.source}\nreport: {paths['markdown']}")


@genfilt_app.command(
    "judge",
    epilog="Examples:\n\n  querylife genfilt judge --judge guide --catalog data/demo/catalog.parquet "
    "--pairs data/demo/pairs.parquet --out runs/genfilt/guide\n\n"
    "  querylife genfilt judge --judge generative --catalog data/demo/catalog.parquet --pairs data/demo/pairs.parquet "
    "--set genfilt.cache=descriptions.jsonl --set genfilt.base_url=http://127.0.0.1:11434/v1 "
    "--set genfilt.model=qwen2.5:7b",
)
def genfilt_judge(
    judge: Annotated[
        str, typer.Option(help="duplicate_title | guide | descriptions | generative (default: the config's).")
    ] = "",
    out: Annotated[Path, typer.Option(help="Directory for flagged_pairs.csv and judge_summary.json.")] = Path(
        "runs/genfilt/judge"
    ),
    catalog: Annotated[Path | None, typer.Option(help="Catalogue file (overrides data.catalog).")] = None,
    pairs: Annotated[Path | None, typer.Option(help="Labelled pairs file (overrides data.pairs).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs of batches to judge (default: train.epochs).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML/JSON experiment config.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Config override.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Run a false-negative judge over the training batches the trainer will see; write and explain its flags.

    Prints how many in-batch negatives it flagged and what the labels say about them (true equivalents,
    labelled non-relevant, unknown). For the generative judge this also fills the answer cache (genfilt.answers),
    so that training with train.false_negative_judge=generative afterwards asks nothing new.
    """
    _quiet_transformers()
    from .genfilt.base import DescribeError
    from .genfilt.training import JUDGES, judge_training_batches, summary_text
    from .report import write_judge_outputs

    cfg = _load(config, set_, catalog, pairs)
    kind = judge or cfg.train.false_negative_judge
    if kind not in JUDGES or kind == "none":
        _fail(f"--judge must be one of {', '.join(j for j in JUDGES if j != 'none')}, got {kind!r}")
    data = _dataset(cfg, progress=False)
    try:
        flagged, summary = judge_training_batches(cfg, data, kind=kind, epochs=epochs, progress=not quiet)
    except (FileNotFoundError, ValueError, DescribeError) as err:
        _fail(str(err))
    paths = write_judge_outputs(out, flagged, summary, command=command_line())
    typer.echo(summary_text(summary))
    typer.echo(f"flagged pairs: {paths['flagged']}; summary: {paths['summary']}")


@app.command(
    "export-onnx",
    epilog="Examples:\n\n"
    "  querylife export-onnx --checkpoint runs/exp1/best --out runs/exp1/best/onnx/query_encoder.onnx\n\n"
    "  querylife export-onnx --checkpoint runs/exp1/best --quantize int8   # + onnx/query_encoder.int8.onnx",
)
def export_onnx(
    checkpoint: Annotated[Path, typer.Option(help="Trained checkpoint directory (config.json + model.safetensors).")],
    out: Annotated[
        Path | None, typer.Option(help="The .onnx file to write (default: CHECKPOINT/onnx/query_encoder.onnx).")
    ] = None,
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default: the exporter's).")] = None,
    exporter: Annotated[str, typer.Option(help="dynamo (torch.onnx.export(dynamo=True)) or legacy (TorchScript).")] = (
        "dynamo"
    ),
    tolerance: Annotated[float, typer.Option(help="Largest |ONNX - PyTorch| accepted on the check queries.")] = 1e-4,
    quantize: Annotated[
        str, typer.Option(help="none, or int8: also write OUT's .int8.onnx twin (dynamic int8 weights; faster, "
                               "scores differ slightly from `eval`'s: docs/SERVING.md).")
    ] = "none",
    min_cosine: Annotated[
        float | None, typer.Option(help="With --quantize int8: fail if a check query's int8 vector has a lower "
                                        "cosine to PyTorch's (default: querylife.onnx_export.DEFAULT_MIN_COSINE).")
    ] = None,
) -> None:
    """Export the query tower + query head to one ONNX graph (dynamic batch and length) with its tokenizer;
    checks it against PyTorch and prints the largest difference. `serve` can encode queries with it."""
    _quiet_transformers()
    from .model import CONFIG_NAME
    from .onnx_export import DEFAULT_MIN_COSINE, DEFAULT_NAME, export_query_encoder, quiet_export

    if not (checkpoint / CONFIG_NAME).exists():
        _fail(f"{checkpoint} is not a querylife checkpoint: {CONFIG_NAME} is missing")
    target = out or checkpoint / "onnx" / DEFAULT_NAME
    try:
        with quiet_export():
            result = export_query_encoder(
                checkpoint, target, opset=opset, exporter=exporter, tolerance=tolerance, quantize=quantize,
                min_cosine=DEFAULT_MIN_COSINE if min_cosine is None else min_cosine,
            )
    except (ImportError, ValueError) as err:
        _fail(str(err))
    typer.echo(
        f"wrote {result.path} (exporter {result.exporter}, opset {result.opset}, inputs "
        f"{', '.join(result.input_names)}; tokenizer files beside it)\n"
        f"parity with PyTorch on {len(result.check_queries)} queries: max |diff| {result.max_abs_diff:.2e}"
    )
    if result.quantized is not None:
        q = result.quantized
        typer.echo(
            f"wrote {q.path} ({q.quantization}; serve it with --onnx {q.path})\n"
            f"its parity with PyTorch: max |diff| {q.max_abs_diff:.2e}, min cosine {q.min_cosine:.4f} "
            f"(bound {q.min_cosine_bound:g})"
        )


RAY_HELP = "Run on Ray (docs/RAY.md): a local Ray instance, or the cluster --ray-address names."
RAY_ADDRESS_HELP = "Existing Ray cluster for --ray: auto, ray://HOST:PORT or HOST:PORT (default: start a local one)."
RAY_WORKERS_HELP = "Ray actors for --ray, each loading the model once (default: one per CPU of the cluster)."


def _ray_options(ray: bool, address: str | None, workers: int | None):
    """RayOptions for --ray (None without it), Ray checked to be installed; a clear error otherwise."""
    if not ray:
        if address is not None or workers is not None:
            _fail("--ray-address and --ray-workers need --ray")
        return None
    from .ray_jobs import RayJobError, RayOptions, require_ray

    try:
        options = RayOptions(address=address, workers=workers).check()
        require_ray()
    except RayJobError as err:
        _fail(str(err))
    return options


def _checkpoint_text_fields(checkpoint: Path) -> tuple[str, ...] | None:
    """The data.text_fields the checkpoint was trained with (its summary.json), if it says."""
    from .checkpoint import trained_config

    try:
        fields = (trained_config(checkpoint) or {})["data"]["text_fields"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return tuple(fields) if isinstance(fields, list) and fields else None


@app.command(
    epilog="Examples:\n\n  querylife embed --checkpoint runs/exp1/best --catalog data/demo/catalog.parquet "
    "--out store\n\n  querylife embed --checkpoint runs/exp1/best --catalog data/demo/catalog.parquet "
    "--out store --update",
)
def embed(
    checkpoint: Annotated[Path, typer.Option(help="Trained checkpoint directory (model.safetensors + config.json).")],
    out: Annotated[Path, typer.Option(help="Store directory (manifest.json + Parquet shards).")],
    catalog: Annotated[Path | None, typer.Option(help="Catalogue file (Parquet, CSV or JSONL).")] = None,
    data: Annotated[Path | None, typer.Option(help="A data set folder or file: its catalogue is embedded.")] = None,
    format_: Annotated[str | None, typer.Option("--format", help="auto|querylife|crowdflower|esci|wands")] = None,
    update: Annotated[bool, typer.Option(help="Re-embed only new or changed products; drop removed ones.")] = False,
    batch_size: Annotated[int, typer.Option(help="Products per encoder batch (images decoded per batch).")] = 256,
    shard_size: Annotated[int, typer.Option(help="Products per Parquet shard.")] = 10_000,
    column: Annotated[list[str] | None, typer.Option("--column", help=COLUMN_HELP)] = None,
    config: Annotated[Path | None, typer.Option(help="YAML/JSON experiment config (its data section).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Config override, e.g. --set data.skip_bad_rows=true.")
                    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    ray: Annotated[bool, typer.Option("--ray", help=RAY_HELP)] = False,
    ray_address: Annotated[str | None, typer.Option(help=RAY_ADDRESS_HELP)] = None,
    ray_workers: Annotated[int | None, typer.Option(help=RAY_WORKERS_HELP)] = None,
) -> None:
    """Embed a catalogue with a checkpoint into an embedding store (resumable; --update for changes)."""
    if bool(catalog) == bool(data):
        _fail("give --catalog FILE or --data PATH (one of them)")
    ray_options = _ray_options(ray, ray_address, ray_workers)
    _quiet_transformers()
    from .data.errors import DataError
    from .encode import load_catalogue
    from .store import StoreError, embed_catalogue

    extra = [f"data.{key}={value}" for key, value in (("catalog", catalog), ("path", data), ("format", format_))
             if value]
    extra += ["data.pairs=null", "data.path=null" if catalog else "data.catalog=null"]
    cfg = _config(config, set_, column, extra)
    fields = cfg.data.text_fields
    if tuple(fields) == ("title",):  # the default: use what the model was trained on
        fields = _checkpoint_text_fields(checkpoint) or fields
    try:
        catalogue = load_catalogue(cfg.data, text_fields=fields, progress=not quiet)
        catalogue.notes.emit(lambda line: typer.secho(line, err=True))
        run = embed_catalogue
        if ray_options is not None:
            from .ray_jobs import embed_catalogue_ray

            run = partial(embed_catalogue_ray, options=ray_options)
        result = run(
            checkpoint, catalogue, out, update=update, batch_size=batch_size, shard_size=shard_size,
            skip_bad=cfg.data.skip_bad_rows, progress=not quiet, log=lambda line: typer.echo(line, err=True),
        )
    except (DataError, StoreError, FileNotFoundError, ValueError) as err:
        _fail(str(err))
    if catalogue.bad_rows is not None and catalogue.bad_rows.total:
        typer.echo(catalogue.bad_rows.summary())
    typer.echo(result.summary())


def _index_params(params: list[str] | None) -> dict[str, str]:
    out = {}
    for item in params or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _fail(f"--param {item!r}: write KEY=VALUE, e.g. --param nprobe=64")
        out[key.strip()] = value.strip()
    return out


@app.command(
    epilog="Examples:\n\n  querylife index store\n\n"
    "  querylife index store --kind ivf --param nlist=1024 --param nprobe=32",
)
def index(
    store: Annotated[Path, typer.Argument(help="Store directory written by `querylife embed`.")],
    kind: Annotated[str | None, typer.Option(help="auto | flat | ivf | hnsw (auto: exact below the threshold).")
                    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="IndexConfig setting KEY=VALUE, e.g. exact_threshold=50000, nlist, nprobe, "
                                     "hnsw_m, hnsw_ef_search, recall_k (repeatable)."),
    ] = None,
) -> None:
    """Build the FAISS index over a store's index vectors; print recall@k against exact search."""
    from pydantic import ValidationError

    from .index import IndexConfig, build_index
    from .store import StoreError

    values: dict[str, object] = dict(_index_params(param))
    if kind:
        values["kind"] = kind
    try:
        cfg = IndexConfig.model_validate(values)
    except ValidationError as err:
        _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()))
    try:
        build = build_index(store, cfg)
    except StoreError as err:
        _fail(str(err))
    typer.echo(build.summary())


@app.command(
    epilog='Example: querylife search store "red striped sofa" --k 10',
)
def search(
    store: Annotated[Path, typer.Argument(help="Store directory written by `querylife embed`.")],
    query: Annotated[str, typer.Argument(help="The search query.")],
    k: Annotated[int, typer.Option(help="Results to show.")] = 10,
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: the one named in the store).")
                          ] = None,
    candidates: Annotated[int | None, typer.Option(help="ANN candidates re-scored (default max(10 k, 100)).")
                          ] = None,
    exact: Annotated[bool, typer.Option(help="Score every product (no index).")] = False,
) -> None:
    """Top-k products for a query: ANN candidates re-scored with the query-aware gate; a table."""
    _quiet_transformers()
    from .model import QueryLifeModel
    from .search import Searcher
    from .store import EmbeddingStore, StoreError, checkpoint_hash

    if k <= 0:
        _fail(f"--k must be positive, got {k}")
    try:
        opened = EmbeddingStore.open(store)
        path = checkpoint or opened.checkpoint_path
        sha = checkpoint_hash(path)
        if sha != opened.checkpoint_sha256:
            _fail(f"{store} holds vectors of checkpoint {opened.checkpoint_sha256} ({opened.checkpoint_path}), "
                  f"not of {sha} ({path})")
        products = opened.load()
        index_ = None
        if not exact and (store / "index.json").exists():
            from .index import ProductIndex

            index_ = ProductIndex.load(store, store=opened)
        elif not exact:
            typer.secho(f"note: no index in {store} (`querylife index {store}`): scoring every product", err=True)
        model = QueryLifeModel.from_pretrained(path)
    except (StoreError, FileNotFoundError, ValueError) as err:
        _fail(str(err))
    hits = Searcher(model, products, index_).search(query, k=k, candidates=candidates)
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{query!r}: top {len(hits)} of {len(products)}", box=box.SIMPLE)
    for name, justify in (("rank", "right"), ("product_id", "left"), ("title", "left"), ("type", "left"),
                          ("score", "right"), ("image weight", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for h in hits:
        weight = "-" if h.image_weight != h.image_weight else f"{h.image_weight:.2f}"  # NaN: no gate (concat)
        table.add_row(str(h.rank), h.product_id, h.title, h.product_type, f"{h.score:.4f}", weight)
    Console(no_color=True, highlight=False, soft_wrap=False).print(table)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
