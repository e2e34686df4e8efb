"""GenFilt in training: build the configured judge and feed its mask into the contrastive loss.

``train.false_negative_judge`` picks the judge:

- ``none``: no filtering (in-batch negatives as they come, minus what the data says: same product, labelled
  positives);
- ``duplicate_title``: same normalised title as the positive (cheap baseline);
- ``guide``: GIST-style guide model on raw titles (a frozen text encoder; Solatorio 2024);
- ``descriptions``: GenFilt's similarity judge on generated descriptions from ``genfilt.cache``;
- ``generative``: the description judge with the looser ``genfilt.prefilter_margin`` picks suspicious pairs, a
  generative model answers yes / no for them (``genfilt.describer`` / ``base_url`` / ``model``), answers cached
  in ``genfilt.answers``.

``train.false_negative_action`` says what a flagged negative becomes (dropped from the loss, or an extra
positive) and ``train.protect_labelled_negatives`` keeps the judge from overruling training labels (those that
say "irrelevant", by default).

Each epoch the trainer logs how many negatives the judge masked and, where the data has ground truth (the
demo's ``group_id``, labelled positives), how many of them were true equivalents, and how many labelled
non-relevant pairs it flagged (or was kept from flagging).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.prepare import Dataset, training_positive
from .describe import QUERY_ID_PREFIX, make_describer, query_descriptions
from .judges import (
    DescriptionSimilarityJudge,
    DuplicateTitleJudge,
    GenerativeJudge,
    GuideModelJudge,
    Judge,
    text_tower_encoder,
)
from .mask_eval import KnownEquivalents, known_equivalents

JUDGES = ("none", "duplicate_title", "guide", "descriptions", "generative")


class JudgeMask:
    """``Trainer(negative_mask_fn=...)`` callback around a judge, with per-epoch counts.

    Args:
        judge: any judge.
        catalog_ids: product id of each catalogue row (the trainer passes rows).
        truth: known equivalents (group ids, labelled positives) for the precision counts; optional.
        labelled_negatives: (query, product_id) pairs the labels call not relevant (below the positive threshold);
            flagged ones are counted.
        protected: the pairs among them that are never flagged (see ``train.protect_labelled_negatives``).

    Example::

        fn = JudgeMask(DuplicateTitleJudge(titles), data.catalog["product_id"].to_numpy(), truth)
        Trainer(cfg, data, run_dir, negative_mask_fn=fn)
    """

    def __init__(
        self,
        judge: Judge,
        catalog_ids: Sequence[str] | np.ndarray,
        truth: KnownEquivalents | None = None,
        *,
        labelled_negatives: set[tuple[str, str]] | None = None,
        protected: set[tuple[str, str]] | None = None,
    ):
        self.judge = judge
        self.ids = np.asarray(catalog_ids, dtype=object)
        self.truth = truth
        self.labelled_negatives = labelled_negatives or set()
        self.protected_pairs = protected or set()
        self._reset()

    def _reset(self) -> None:
        self.masked = 0
        self.true_masked = 0
        self.labelled_negative_masked = 0
        self.protected = 0
        self.pairs = 0

    def __call__(self, queries: list[str], product_rows: np.ndarray) -> torch.Tensor:
        rows = np.asarray(product_rows, dtype=np.int64)
        b = len(queries)
        pids = [str(p) for p in self.ids[rows].tolist()]
        mask = np.array(self.judge.mask(list(queries), pids, pids[:b]), dtype=bool)  # (B, Bp)
        self.pairs += b * len(pids) - b
        for i, j in zip(*np.nonzero(mask), strict=True):
            key = (queries[i], pids[j])
            if key in self.protected_pairs:
                mask[i, j] = False
                self.protected += 1
                continue
            if key in self.labelled_negatives:
                self.labelled_negative_masked += 1
            if self.truth is not None:
                self.true_masked += bool(self.truth(queries[i], pids[i], pids[j]))
        self.masked += int(mask.sum())
        return torch.from_numpy(mask)

    def epoch_stats(self) -> dict[str, float]:
        """Counts since the last call: masked negatives, their share, and what the labels say about them.

        ``mask_precision`` counts a masked pair as right only when the ground truth says so (a duplicate group or
        a labelled positive); on data without groups most masked pairs are unlabelled, so it is a lower bound.
        ``labelled_precision`` looks only at masked pairs the labels decide (true equivalents vs labelled
        non-relevant ones, protected flags included).
        """
        out = {
            "judge": getattr(self.judge, "name", type(self.judge).__name__),
            "masked_negatives": self.masked,
            "masked_fraction": self.masked / self.pairs if self.pairs else 0.0,
            "protected_labelled_negatives": self.protected,
            "masked_labelled_negatives": self.labelled_negative_masked,
        }
        if self.truth is not None:
            wrong = self.labelled_negative_masked + self.protected
            out["masked_true_equivalents"] = self.true_masked
            out["mask_precision"] = self.true_masked / self.masked if self.masked else float("nan")
            decided = self.true_masked + wrong
            out["labelled_precision"] = self.true_masked / decided if decided else float("nan")
        self._reset()
        return out


def labelled_negative_pairs(
    data: Dataset, split: str = "train", include_partial: bool = False, *, irrelevant_only: bool = False
) -> set[tuple[str, str]]:
    """(query, product_id) pairs a split labels as not relevant (with ``include_partial`` partial ones are
    relevant, as in training with ``data.include_partial_positives``); ``irrelevant_only``: only gain-0 labels."""
    pairs = data.splits[split]
    neg = pairs[~training_positive(pairs, include_partial or irrelevant_only)]
    return set(zip(neg["query"].astype(str), neg["product_id"].astype(str), strict=True))


def protected_pairs(config, data: Dataset, split: str = "train") -> set[tuple[str, str]]:
    """The labelled pairs a judge may not flag, from ``train.protect_labelled_negatives``."""
    level = config.train.protect_labelled_negatives
    if level == "none":
        return set()
    partial = config.data.include_partial_positives
    return labelled_negative_pairs(data, split, partial, irrelevant_only=level == "irrelevant")


def guide_encoder(config, text_tower=None):
    """The similarity judges' guide encoder (``genfilt.guide_model``), cached. ``text_tower``: the model's frozen
    text tower, reused when it is that same model (saves loading it twice); a trainable tower is never reused (the
    guide must stay fixed)."""
    g = config.genfilt
    reuse = text_tower is not None and text_tower.frozen and g.guide_model == config.model.tower.text_model
    return text_tower_encoder(text_tower if reuse else g.guide_model)


def load_descriptions(config, describer: str | None = None) -> tuple[str, str, dict[str, str], dict[str, str]]:
    """Product descriptions (and query intents) from ``genfilt.cache``.

    Returns ``(describer, prompt_version, product_id -> description, query -> intent)``. ``describer``: use that
    describer's descriptions; default: the describer and prompt version of the most recently written product
    description (a rerun with a new prompt or model wins).
    """
    from .cache import DescriptionCache

    g = config.genfilt
    path = Path(g.cache)
    if not path.exists():
        raise FileNotFoundError(
            f"generated descriptions are needed in {path}: "
            "run `querylife genfilt describe` first (or set genfilt.cache)"
        )
    store = DescriptionCache(path)
    records = [r for r in store.items() if not r["product_id"].startswith(QUERY_ID_PREFIX)]
    if describer is not None:
        records = [r for r in records if r["describer"] == describer]
    if not records:
        raise ValueError(f"{path} holds no product descriptions" + (f" from {describer}" if describer else ""))
    name, version = records[-1]["describer"], records[-1]["prompt_version"]
    mine = [r for r in records if (r["describer"], r["prompt_version"]) == (name, version)]
    descriptions = {r["product_id"]: r["text"] for r in mine}  # the latest text of a product that changed
    return name, version, descriptions, query_descriptions(store, name, g.query_prompt.version)


def build_judge(
    config,
    data: Dataset,
    text_tower=None,
    *,
    kind: str | None = None,
    ask=None,
    describer: str | None = None,
    encoder=None,
) -> Judge | None:
    """The judge named by ``kind`` (default ``config.train.false_negative_judge``); None for "none".

    ``ask``: the generative judge's client (default: a yes / no client over the configured describer).
    ``describer``: whose descriptions the description judges use (default: the most recent; see
    :func:`load_descriptions`). ``encoder``: a guide encoder to share between judges (its embeddings are cached);
    default :func:`guide_encoder` (``text_tower`` is passed on to it).
    """
    kind = kind or config.train.false_negative_judge
    if kind == "none":
        return None
    if kind not in JUDGES:
        raise ValueError(f"unknown false-negative judge {kind!r}; known: {', '.join(JUDGES)}")
    g = config.genfilt
    titles = dict(zip(data.catalog["product_id"], data.catalog["title"], strict=True))
    if kind == "duplicate_title":
        return DuplicateTitleJudge(titles)
    encoder = encoder or guide_encoder(config, text_tower)
    if kind == "guide":
        return GuideModelJudge(encoder, titles, margin=g.margin, margin_kind=g.margin_kind)
    if kind == "generative" and g.generative_prefilter == "guide":
        # The guide on raw titles picks the suspicious pairs (no descriptions needed); the model sees titles.
        guide = GuideModelJudge(encoder, titles, margin=g.prefilter_margin, margin_kind=g.margin_kind)
        return generative_judge(config, data, guide, ask=ask)
    _, _, descriptions, intents = load_descriptions(config, describer)
    margin = g.margin if kind == "descriptions" else g.prefilter_margin
    judge = DescriptionSimilarityJudge(
        encoder, descriptions, titles, margin=margin, margin_kind=g.margin_kind, query_descriptions=intents
    )
    if kind == "descriptions":
        return judge
    return generative_judge(config, data, judge, ask=ask)


def generative_judge(config, data: Dataset, prefilter: Judge, ask=None) -> GenerativeJudge:
    """GenFilt's generative judge over ``prefilter`` with a persistent answer cache (``genfilt.answers``).

    ``ask``: a ready client (tests pass one); default: with ``genfilt.judge_model`` a
    :class:`~querylife.genfilt.lm_judge.LogprobYesNo` on that local model (one forward pass per pair), else a
    :class:`~querylife.genfilt.ask.YesNoClient` over the configured describer, checked once so that an unreachable
    server fails here and not in the first batch. The labelled pairs of ``train.protect_labelled_negatives`` are
    never asked about (they could not be masked anyway).
    """
    from .ask import AnswerCache, YesNoClient

    g = config.genfilt
    if ask is None and g.judge_model:
        from .lm_judge import LogprobYesNo

        ask = LogprobYesNo.from_spec(
            g.judge_model,
            g.judge_prompt,
            threshold=g.judge_threshold,
            batch_size=g.judge_batch_size,
            prefix_cache=g.judge_prefix_cache,
            cache_dir=g.lm_cache_dir or None,
        )
    if ask is None:
        describer = make_describer(config)
        check = getattr(describer, "check", None)
        if check is not None:
            check()
        ask = YesNoClient(describer, g.judge_prompt)
    text_of = getattr(prefilter, "product_text", None)
    if text_of is None:
        titles = dict(zip(data.catalog["product_id"], data.catalog["title"], strict=True))
        text_of = titles.__getitem__
    cache = AnswerCache(g.answers, getattr(ask, "name", "ask"), g.judge_prompt.version, text_of)
    cat = data.catalog
    images = None
    if "image_path" in cat.columns:
        paths = zip(cat["product_id"], cat["image_path"], strict=True)
        images = {pid: (path if isinstance(path, str) and path else None) for pid, path in paths}
    return GenerativeJudge(
        ask,
        prefilter,
        products=None,
        max_pairs_per_batch=g.max_questions_per_batch,
        cache=cache,
        product_types=dict(zip(cat["product_id"], cat["product_type"], strict=True)),
        images=images,
        protected=protected_pairs(config, data),
    )


def build_negative_mask_fn(config, data: Dataset, text_tower=None) -> JudgeMask | None:
    """The judge named by ``config.train.false_negative_judge`` as a trainer callback (None for "none")."""
    judge = build_judge(config, data, text_tower)
    if judge is None:
        return None
    truth = known_equivalents(data.catalog, data.splits["train"])
    negatives = labelled_negative_pairs(data, "train", config.data.include_partial_positives)
    return JudgeMask(
        judge,
        data.catalog["product_id"].to_numpy(),
        truth,
        labelled_negatives=negatives,
        protected=protected_pairs(config, data),
    )


def judge_with_shared_tower(config, data: Dataset, towers=None):
    """``(towers, judge)`` for a :class:`~querylife.train.Trainer`: the configured false-negative judge (None for
    "none") and the text towers its guide shares with the model (``towers``, else the config's frozen text towers,
    built once; None when they train or no judge is configured).

    Example::

        towers, judge = judge_with_shared_tower(cfg, data)
        Trainer(cfg, data, "runs/exp1", towers=towers, negative_mask_fn=judge).fit()
    """
    if config.train.false_negative_judge == "none":
        return towers, None
    if towers is None:
        from ..towers import frozen_text_towers

        towers = frozen_text_towers(config.model.tower)
    return towers, build_negative_mask_fn(config, data, towers[0] if towers else None)


def judge_training_batches(
    config,
    data: Dataset,
    *,
    kind: str | None = None,
    epochs: int | None = None,
    progress: bool = True,
    judge: Judge | None = None,
):
    """Run a judge over the training batches the trainer will see (:class:`querylife.batches.EpochBatches`: same
    sampler, seed, epochs and hard negatives).

    Used by ``querylife genfilt judge``: it shows what a judge would remove before any training, and for the
    generative judge it fills the answer cache offline, so that training afterwards only reads answers.

    Returns ``(flagged, summary)``: one row per flagged pair (``epoch``, ``query``, ``positive_id``,
    ``product_id``, ``truth``: "group" / "label" / "" from the known equivalents, ``protected``: a labelled
    non-relevant pair that the judge flagged and the protection kept), and the counts.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from ..batches import EpochBatches

    kind = kind or config.train.false_negative_judge
    judge = judge or build_judge(config, data, kind=kind)
    if judge is None:
        raise ValueError("no judge: pass --judge (duplicate_title, guide, descriptions or generative)")
    tc = config.train
    train = data.splits["train"]
    truth = known_equivalents(data.catalog, train)
    negatives = labelled_negative_pairs(data, "train", config.data.include_partial_positives)
    protect = protected_pairs(config, data)
    n_epochs = tc.epochs if epochs is None else epochs
    plan = [b for b in EpochBatches.from_config(data, config).steps(n_epochs) if len(b.product_rows) >= 2]
    rows, pairs = [], 0
    for batch in tqdm(plan, desc=f"judging ({kind})", disable=not progress):
        qs, cols, positives = batch.queries, batch.product_ids, batch.positive_ids
        mask = np.asarray(judge.mask(qs, cols, positives), dtype=bool)
        pairs += len(qs) * len(cols) - len(qs)
        for i, j in zip(*np.nonzero(mask), strict=True):
            reason = truth.reason(qs[i], positives[i], cols[j]) or ""
            rows.append(
                {
                    "epoch": batch.epoch + 1,
                    "query": qs[i],
                    "positive_id": positives[i],
                    "product_id": cols[j],
                    "truth": reason,
                    "labelled_negative": (qs[i], cols[j]) in negatives,
                    "protected": (qs[i], cols[j]) in protect,
                }
            )
    columns = ["epoch", "query", "positive_id", "product_id", "truth", "labelled_negative", "protected"]
    flagged = pd.DataFrame(rows, columns=columns)
    n_flag = len(flagged)
    n_used = int((~flagged["protected"]).sum())
    n_true = int((flagged["truth"] != "").sum())
    n_lab = int(flagged["labelled_negative"].sum())
    summary = {
        "judge": getattr(judge, "name", kind),
        "kind": kind,
        "epochs": n_epochs,
        "batches": len(plan),
        "pairs": pairs,
        "flagged": n_flag,
        "flagged_fraction": n_flag / pairs if pairs else 0.0,
        "protected_labelled_negatives": int(flagged["protected"].sum()),
        "masked_in_training": n_used,
        "true_equivalents": n_true,
        "true_by_group": int((flagged["truth"] == "group").sum()),
        "true_by_label": int((flagged["truth"] == "label").sum()),
        "labelled_negatives": n_lab,
        "unlabelled": n_flag - n_true - n_lab,
        "precision_lower_bound": n_true / n_flag if n_flag else float("nan"),
        "labelled_precision": n_true / (n_true + n_lab) if n_true + n_lab else float("nan"),
        "action": tc.false_negative_action,
        "protect_labelled_negatives": tc.protect_labelled_negatives,
    }
    stats = getattr(judge, "stats", None)
    if stats is not None:
        summary["judge_stats"] = stats.as_dict()
    ask_stats = getattr(getattr(judge, "ask", None), "stats", None)
    if ask_stats:
        summary["answers"] = dict(ask_stats)
    return flagged, summary


def summary_text(summary: dict) -> str:
    """What a judge removed and why, in counts and percentages (printed by ``querylife genfilt judge``)."""

    def pct(n: int, d: int) -> str:
        return f"{n} ({100 * n / d:.2f}%)" if d else str(n)

    n = summary["flagged"]
    lines = [
        f"judge {summary['judge']}: {summary['batches']} training batches over {summary['epochs']} epoch(s), "
        f"{summary['pairs']} in-batch negatives",
        f"  flagged as false negatives: {pct(n, summary['pairs'])}",
        f"    true equivalents (same group or labelled relevant): {pct(summary['true_equivalents'], n)}"
        f" [group {summary['true_by_group']}, label {summary['true_by_label']}]",
        f"    labelled NOT relevant for the query: {pct(summary['labelled_negatives'], n)}"
        f" (kept as negatives by protect_labelled_negatives={summary['protect_labelled_negatives']}:"
        f" {summary['protected_labelled_negatives']})",
        f"    no ground truth: {pct(summary['unlabelled'], n)}",
        f"  used in training ({summary['action']}): {summary['masked_in_training']}",
    ]
    js = summary.get("judge_stats") or {}
    if js.get("asked") or js.get("cache_hits"):
        lines.append(
            f"  generative model: asked {js['asked']}, cached {js['cache_hits']}, over budget {js['over_budget']}, "
            f"yes {js['yes']}, no {js['no']}, undecided {js['undecided']}"
        )
    return "\n".join(lines)
