"""Experiment configuration: one validated model per component, loadable from YAML/JSON with CLI overrides.

Unknown keys are errors at every level (``extra="forbid"``), so a typo in a config file fails loudly instead of
silently training with a default.

Example::

    cfg = load_config("configs/demo.yaml", ["train.lr=3e-4", "model.fusion.mode=mean"])
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .compat import removed_options_validator
from .data.columns import check_mapping
from .data.errors import DataError
from .data.labels import scheme_name
from .data.titles import MAX_TITLE_CHARS
from .genfilt.config import GenFiltConfig
from .losses import LossConfig
from .model import ModelConfig


class DataConfig(BaseModel):
    """Where the data is, how its columns are read and how it is split (docs/DATA_FORMATS.md)."""

    model_config = ConfigDict(extra="forbid")
    catalog: str | None = None  # Parquet / CSV / JSONL with product_id, title, product_type[, image_path, ...]
    pairs: str | None = None  # query, product_id, label[, split]
    # Or a data set in its own layout (instead of catalog + pairs): a file or directory, read by
    # querylife.data.formats (a directory with catalog.* and pairs.* is read exactly like catalog + pairs).
    path: str | None = None
    format: Literal["auto", "querylife", "crowdflower", "esci", "wands"] = "auto"
    # Our field -> your column, e.g. {"image_path": "img", "product_id": "sku"} (--column FIELD=COLUMN); "" means
    # no column for an optional field. Unmapped fields use the column named like them, else a common alias
    # (image_url, sku, category...; querylife.data.columns).
    columns: dict[str, str] = Field(default_factory=dict)
    locale: str = "us"  # ESCI: product_locale to keep
    version: Literal["small", "large"] = "small"  # ESCI: the official small or large version
    relevant_min: int | None = None  # graded labels (CrowdFlower, your own): lowest grade counted relevant
    esci_gains: dict[str, float] | None = None  # ESCI: E/S/C/I gains (None: 1.0 / 0.1 / 0.01 / 0)
    # Honour the pairs' own `split` column (train / dev / test: yours, or ESCI's official one) when there is one;
    # dev is carved from its train when it has no dev rows. False: split at random, ignoring the column.
    official_split: bool = True
    # Catalogue columns joined into the product text the title tower reads (e.g. ["title", "description"]).
    text_fields: tuple[str, ...] = ("title",)
    label_scheme: str = "auto"  # auto | exact_partial_irrelevant | esci | binary | graded
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)  # train / dev / test fractions over queries
    split_seed: int = 0
    # Column that groups the split: "query" (no query in two splits), or a coarser one such as the demo's
    # "intent" so that paraphrases of one test query are not trained on.
    split_by: str = "query"
    skip_bad_rows: bool = False  # True: drop and count malformed rows instead of stopping
    include_partial_positives: bool = False  # train on partial matches as positives too
    # Titles longer than this are cut to it (and counted). The text tower reads model.tower.max_text_length tokens
    # (48: ~200 characters); a much longer title is usually a description in the wrong column. 0: no limit.
    max_title_chars: int = Field(default=MAX_TITLE_CHARS, ge=0)
    # Image URLs (http/https) in the catalogue: download each once into image_cache (True), or stop with a message
    # saying how to (False: querylife reaches the network only when asked).
    download_images: bool = False
    image_cache: str | None = None  # None: $XDG_CACHE_HOME/querylife/images or ~/.cache/querylife/images
    image_timeout_s: float = Field(default=30.0, gt=0)
    image_max_bytes: int = Field(default=20_000_000, gt=0)

    @field_validator("columns", mode="before")
    @classmethod
    def _known_fields(cls, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, dict):
            return value  # pydantic says it is not a mapping
        try:
            # Column names such as 2024 or yes arrive from YAML as numbers / booleans: they are names.
            return check_mapping({k: (v if v is None or isinstance(v, str) else str(v)) for k, v in value.items()})
        except DataError as err:
            raise ValueError(str(err)) from None

    @field_validator("label_scheme")
    @classmethod
    def _current_scheme_name(cls, value: str) -> str:
        return scheme_name(value)


class TrainConfig(BaseModel):
    """Optimisation. Defaults suit frozen text towers with small trainable heads on CPU."""

    model_config = ConfigDict(extra="forbid")
    epochs: int = 10  # with early stopping on dev NDCG@10 (patience below)
    batch_size: int = 128  # in-batch negatives: larger is better up to memory; the sampler avoids duplicates
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05  # of all steps, then cosine decay to 0
    grad_clip: float = 1.0
    # Gate scalars and temperature: single numbers AdamW moves by ~lr per step, so faster (docs/TUNING.md).
    gate_lr_multiplier: float = 30.0
    # Share of steps with the gate held at mean fusion, so it does not learn "trust the title" early (docs/TUNING.md).
    gate_start_fraction: float = Field(default=0.5, ge=0.0, lt=1.0)
    # Gated modes: the dev-best checkpoint (and patience) only among epochs with half an epoch of gate training or
    # more; an epoch inside the hold is mean fusion, and choosing it reported mean fusion under the gate's name.
    select_after_gate: bool = True
    seed: int = 0
    # Labelled non-positive candidates per pair as extra negatives: in-batch ones are mostly other types (TUNING.md).
    hard_negatives: int = 0
    # GenFilt: the judge that keeps suspected false negatives out of the loss (docs/GENFILT.md).
    false_negative_judge: Literal["none", "duplicate_title", "guide", "descriptions", "generative"] = "none"
    # "drop" (GIST): a wrong flag costs one negative; "positive" (SupCon): a wrong flag pulls towards a wrong product.
    false_negative_action: Literal["drop", "positive"] = "drop"
    # Labels a judge may not overrule. all: every labelled non-positive (the user's labels are the truth);
    # irrelevant: only gain-0 labels, so judges may mask labelled partial matches; none: GISTEmbed's behaviour, for
    # comparisons only (GENFILT.md; CrowdFlower numbers per setting in benchmarks/results/crowdflower_protect/).
    protect_labelled_negatives: Literal["all", "irrelevant", "none"] = "all"
    patience: int = 4  # epochs without dev NDCG@10 improvement before early stopping; 0 disables
    save_every_steps: int = 0  # 0: checkpoint at each epoch end only
    eval_batch_size: int = 512
    device: str = "auto"  # auto | cpu | cuda
    num_threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    # Distributed runs only (torchrun / --nproc): auto = nccl on CUDA, gloo on CPU (docs/SCALE.md).
    dist_backend: Literal["auto", "gloo", "nccl"] = "auto"
    # Gradient cache (docs/GRAD_CACHE.md): embed, then backpropagate, in sub-batches of this many pairs, so a large
    # batch fits in the memory of a small one for about one extra forward pass; 0 = off (the plain step).
    grad_cache_chunk: int = Field(default=0, ge=0)
    # Options removed since earlier versions: dropped at their old default, an error otherwise (querylife.compat).
    _removed = removed_options_validator("train")


class EvalConfig(BaseModel):
    """How test results and the relevance decision are computed."""

    model_config = ConfigDict(extra="forbid")
    calibration: Literal["logistic", "isotonic"] = "logistic"  # score -> probability, fitted on dev
    threshold_rule: Literal["max_f1", "target_precision"] = "max_f1"  # chosen on dev
    target_precision: float = 0.9
    n_boot: int = 1000  # bootstrap resamples over test queries for the 95% intervals


class ExperimentConfig(BaseModel):
    """A whole training run."""

    model_config = ConfigDict(extra="forbid")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    genfilt: GenFiltConfig = Field(default_factory=GenFiltConfig)


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key."""


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.lr=3e-4"`` -> ("train.lr", 0.0003); values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: cannot parse value: {err}") from err
    return key.strip(), value


def config_from_dict(tree: dict[str, Any], source: str = "config") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as err:
        lines = [f"{source}: invalid configuration"]
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"])
            lines.append(f"  {where}: {e['msg'].removeprefix('Value error, ')}")
        raise ConfigError("\n".join(lines)) from None


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    tree: dict[str, Any] | None = None,
    source: str | None = None,
) -> ExperimentConfig:
    """Load a YAML or JSON config file (or the defaults), then apply ``section.key=value`` overrides.

    ``tree``: a config already read as a mapping (e.g. the one a checkpoint's summary.json records) instead of a
    file; ``source`` names it in error messages.

    Example::

        cfg = load_config(tree=trained_config("runs/exp1/best"), overrides=["eval.calibration=isotonic"],
                          source="runs/exp1/best/summary.json")
    """
    if path is not None and tree is not None:
        raise ValueError("give a config file (path) or a config mapping (tree), not both")
    source = source or ("config mapping" if tree is not None else "defaults")
    tree = copy.deepcopy(tree) if tree is not None else {}
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise ConfigError(f"cannot read config {path}: {err}") from err
        try:
            tree = json.loads(text) if path.suffix == ".json" else (yaml.safe_load(text) or {})
        except (json.JSONDecodeError, yaml.YAMLError) as err:
            raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {err}") from err
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for item in overrides or []:
        key, value = parse_override(item)
        _set_path(tree, key, value)
    return config_from_dict(tree, source)


def with_overrides(config: ExperimentConfig, overrides: dict[str, Any]) -> ExperimentConfig:
    """A copy of ``config`` with dotted-key overrides applied and validated (used by the ablation runner)."""
    tree = config.model_dump(mode="json")
    for key, value in overrides.items():
        _set_path(tree, key, value)
    return config_from_dict(tree, "overrides")


def save_config(config: ExperimentConfig, path: str | Path, *, fmt: Literal["json", "yaml"] = "json") -> None:
    data = config.model_dump(mode="json")
    text = json.dumps(data, indent=2) if fmt == "json" else yaml.safe_dump(data, sort_keys=False)
    Path(path).write_text(text + ("\n" if fmt == "json" else ""))
