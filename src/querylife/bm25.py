"""BM25 over product titles: the lexical baseline every learned model has to beat.

The catalogue is indexed once (with the ``bm25s`` library); each distinct query is then scored against the
whole catalogue in one sparse pass and the scores of its labelled candidates are picked out.

Example:
    >>> scorer = BM25Scorer({"p1": "red floral midi dress", "p2": "usb-c phone charger"})
    >>> scorer.score_pairs(["red dress", "red dress"], ["p1", "p2"]).round(3).tolist()
    [0.555, 0.0]
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN

if TYPE_CHECKING:  # only for annotations: the scorer itself needs nothing of the data package
    import pandas as pd

    from .data.prepare import Dataset

BM25_METHODS: tuple[str, ...] = ("robertson", "lucene", "atire", "bm25l", "bm25+")

# Unlike bm25s' default pattern (two or more word characters), keep single characters: in product search
# "s", "m", "l", "5" and "x" (sizes, counts, "2 x 5 m") carry meaning.
_TOKEN_RE = re.compile(r"(?u)\b\w+\b")


def tokenize(text: str, *, lower: bool = True, stopwords: Iterable[str] | None = STOPWORDS_EN) -> list[str]:
    """Split ``text`` into word tokens, lower-cased, without the given stopwords.

    The same function tokenises titles and queries, so both sides always agree.

    Example:
        >>> tokenize("The Red Floral Midi-Dress, size M")
        ['red', 'floral', 'midi', 'dress', 'size', 'm']
    """
    if lower:
        text = text.lower()
    tokens = _TOKEN_RE.findall(text)
    if stopwords:
        stop = stopwords if isinstance(stopwords, (set, frozenset)) else frozenset(stopwords)
        tokens = [t for t in tokens if t not in stop]
    return tokens


class BM25Scorer:
    """BM25 scores of (query, product) pairs over a fixed catalogue of product texts.

    Args:
        corpus_titles: product_id -> text (title, optionally with other text fields appended).
        k1, b: the usual BM25 term-frequency saturation and length normalisation.
        method: BM25 variant of ``bm25s``: ``"lucene"``, ``"robertson"``, ``"atire"``, ``"bm25l"`` or
            ``"bm25+"``.
        lower: lower-case before tokenising.
        stopwords: ``"english"`` (bm25s' English list), ``None`` for none, or an iterable of words.

    Example:
        >>> s = BM25Scorer({"a": "blue denim jacket", "b": "blue cotton shirt", "c": "leather boots"})
        >>> scores = s.score_pairs(["denim jacket"] * 3, ["a", "b", "c"])
        >>> int(scores.argmax()), float(scores[2])
        (0, 0.0)
    """

    def __init__(
        self,
        corpus_titles: Mapping[str, str],
        *,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        lower: bool = True,
        stopwords: str | Iterable[str] | None = "english",
    ) -> None:
        if method not in BM25_METHODS:
            raise ValueError(f"method must be one of {BM25_METHODS}, got {method!r}")
        if not isinstance(corpus_titles, Mapping):
            raise TypeError(f"corpus_titles must map product_id -> text, got {type(corpus_titles).__name__}")
        if len(corpus_titles) == 0:
            raise ValueError("corpus_titles is empty: nothing to index")
        if isinstance(stopwords, str):
            if stopwords.lower() not in ("english", "en"):
                raise ValueError(
                    f"unknown stopword list {stopwords!r}; use 'english', None or a list of words"
                )
            stop: frozenset[str] = frozenset(STOPWORDS_EN)
        else:
            stop = frozenset(stopwords or ())
        self._lower = lower
        self._stop = stop
        self.product_ids: list[str] = [str(pid) for pid in corpus_titles]
        self._row = {pid: i for i, pid in enumerate(self.product_ids)}
        corpus_tokens = []
        for text in corpus_titles.values():
            if text is None or (isinstance(text, float) and np.isnan(text)):
                text = ""  # a product without a title matches nothing, but still gets a (zero) score
            corpus_tokens.append(self.tokenize(str(text)))
        self.retriever = bm25s.BM25(k1=k1, b=b, method=method)
        self.retriever.index(corpus_tokens, show_progress=False)

    def __len__(self) -> int:
        return len(self.product_ids)

    def tokenize(self, text: str) -> list[str]:
        """Tokenise with this scorer's settings (shared by titles and queries)."""
        return tokenize(text, lower=self._lower, stopwords=self._stop)

    def score_query(self, query: str) -> np.ndarray:
        """BM25 score of ``query`` against every product, in :attr:`product_ids` order."""
        # Look the ids up ourselves: bm25s.get_scores fails on an empty token list, and a query made only of
        # stopwords or out-of-vocabulary words legitimately scores 0 everywhere.
        ids = self.retriever.get_tokens_ids(self.tokenize(query))
        if not ids:
            return np.zeros(len(self.product_ids), dtype=np.float32)
        return np.asarray(self.retriever.get_scores_from_ids(ids))

    def score_pairs(self, queries: Sequence[str], product_ids: Sequence[str]) -> np.ndarray:
        """BM25 score of each ``(queries[i], product_ids[i])`` pair, aligned with the input order.

        Each distinct query is scored once against the catalogue. Raises ``KeyError`` naming product ids that
        are not in the catalogue.
        """
        queries = list(queries)
        pids = [str(p) for p in product_ids]
        if len(queries) != len(pids):
            raise ValueError(f"queries and product_ids differ in length: {len(queries)} vs {len(pids)}")
        unknown = [p for p in dict.fromkeys(pids) if p not in self._row]
        if unknown:
            raise KeyError(
                f"{len(unknown)} product id(s) not in the BM25 catalogue, e.g. {unknown[:5]} "
                f"(catalogue has {len(self.product_ids)} products)"
            )
        rows = np.fromiter((self._row[p] for p in pids), dtype=np.int64, count=len(pids))
        out = np.zeros(len(pids), dtype=np.float64)
        by_query: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            by_query.setdefault(str(q), []).append(i)
        for q, idx in by_query.items():
            positions = np.asarray(idx, dtype=np.int64)
            out[positions] = self.score_query(q)[rows[positions]]
        return out


def bm25_pair_scores(data: Dataset, pairs: pd.DataFrame, text_fields: Sequence[str] | None = None) -> np.ndarray:
    """BM25 score of each labelled pair of ``pairs`` (``query``, ``product_id`` columns) over ``data``'s catalogue.

    The catalogue text is the dataset's product text (:meth:`Dataset.product_texts`: its ``text_fields`` joined
    with " | "), or that of ``text_fields`` when given (e.g. ``("title",)`` for a title-only baseline on a dataset
    that trains on title + description). Default :class:`BM25Scorer` settings.
    """
    if text_fields is not None:
        data = dataclasses.replace(data, text_fields=tuple(text_fields))
    corpus = dict(zip(data.catalog["product_id"], data.product_texts(), strict=True))
    return BM25Scorer(corpus).score_pairs(pairs["query"].tolist(), pairs["product_id"].tolist())
