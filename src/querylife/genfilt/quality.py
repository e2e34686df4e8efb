"""The configured false-negative judges, rebuilt and scored on sampled training batches against known equivalents.

:func:`compare_judges` is ``querylife genfilt evaluate`` (every judge the data and config allow, side by side);
:func:`judge_quality` scores the judges a suite's methods trained with (the GenFilt table of a suite report).
Formatting lives in :mod:`querylife.report.genfilt`.

Example::

    comparison = compare_judges(config, data, cache="descriptions.jsonl", n_batches=40)
    comparison.table  # one row per judge: precision, recall, f1, n_masked, ...
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..data.prepare import Dataset
from .judges import text_tower_encoder
from .mask_eval import evaluate_judge, evaluate_judges, known_equivalents, sample_batches
from .training import build_judge, guide_encoder, load_descriptions

#: Columns of :attr:`JudgeComparison.table` worth showing, in order (those present are shown).
SHOWN_COLUMNS: tuple[str, ...] = (
    "precision",
    "recall",
    "f1",
    "n_masked",
    "n_true",
    "n_pairs",
    "mask_rate",
    "asked",
    "cache_hits",
)


@dataclass
class JudgeComparison:
    """Every judge's mask quality on the same sampled batches (``table``: one row per judge, indexed by name)."""

    table: pd.DataFrame
    n_batches: int  # batches actually sampled
    batch_size: int
    source: str  # where the descriptions (and yes / no answers) came from, in words

    def shown(self) -> pd.DataFrame:
        """The table restricted to :data:`SHOWN_COLUMNS`."""
        return self.table[[c for c in SHOWN_COLUMNS if c in self.table.columns]]


@dataclass
class JudgeQuality:
    """Mask quality of the judges some named runs trained with.

    ``entries``: run name -> ``judge`` (its name), ``precision``, ``recall``, ``mask_rate``.
    """

    entries: dict[str, dict[str, Any]]
    n_batches: int
    batch_size: int


def compare_judges(
    config, data: Dataset, *, cache: str | None = None, describer: str | None = None, n_batches: int = 40
) -> JudgeComparison:
    """Precision and recall of each judge's mask against known equivalents, on the first ``n_batches`` batches
    training sees (hard negatives included).

    Known equivalents: products of the same ``group_id`` and products labelled positive for the same query.
    Judges: duplicate title and the GIST-style guide always; with ``cache`` (generated descriptions) the GenFilt
    similarity judge; with ``cache`` and ``genfilt.model`` (or ``genfilt.judge_model``) also the generative judge
    (without ``cache`` when ``genfilt.generative_prefilter=guide``). Raises FileNotFoundError /
    ValueError for missing descriptions, :class:`~querylife.genfilt.base.DescribeError` for an unreachable model.
    """
    sampled = sample_batches(data, config, n_batches)  # exactly the batches training sees
    truth = known_equivalents(data.catalog, data.pairs)
    kinds = {"duplicate_title": "duplicate_title", "gist_guide": "guide"}
    source = "none (no --cache given)"
    if cache:
        config = config.model_copy(update={"genfilt": config.genfilt.model_copy(update={"cache": str(cache)})})
        name, version, descriptions, _ = load_descriptions(config, describer)
        source = f"{name} (prompt {version}), {len(descriptions)} products"
        kinds["genfilt_similarity"] = "descriptions"
    g = config.genfilt
    # A generative model is configured: the generative judge too (answers cached). Its prefilter needs
    # descriptions unless it is the guide.
    if (g.model or g.judge_model) and (cache or g.generative_prefilter == "guide"):
        kinds["genfilt_generative"] = "generative"
    encoder = text_tower_encoder(config.genfilt.guide_model)  # one guide (and its embedding cache) for every judge
    judges = {n: build_judge(config, data, kind=k, describer=describer, encoder=encoder) for n, k in kinds.items()}
    if "genfilt_generative" in judges:
        source += f"; yes/no answers from {judges['genfilt_generative'].ask.name} (cache {config.genfilt.answers})"
    table = evaluate_judges(judges, sampled, truth).set_index("judge")
    return JudgeComparison(table, len(sampled), config.train.batch_size, source)


def judge_quality(
    config, data: Dataset, kinds: Mapping[str, str], *, n_batches: int = 40, text_tower=None
) -> JudgeQuality:
    """Rebuild the judge of each run (``kinds``: run name -> judge kind) and score its mask on ``n_batches``
    sampled training batches against the known equivalents of the training split.

    ``text_tower``: the suite's frozen text tower, reused as the guide when it is the same model.
    """
    if not kinds:
        return JudgeQuality({}, 0, config.train.batch_size)
    encoder = guide_encoder(config, text_tower)  # one for every judge: each distinct text is embedded once
    train = data.splits["train"]
    batches = sample_batches(data, config, n_batches)
    truth = known_equivalents(data.catalog, train)
    entries = {}
    for name, kind in kinds.items():
        judge = build_judge(config, data, kind=kind, encoder=encoder)
        quality = evaluate_judge(judge, batches, truth)
        entries[name] = {
            "judge": getattr(judge, "name", kind),
            "precision": quality["precision"],
            "recall": quality["recall"],
            "mask_rate": quality["mask_rate"],
        }
    return JudgeQuality(entries, len(batches), config.train.batch_size)
