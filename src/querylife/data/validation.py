"""Dataset check: every bad row, missing or corrupt image and label statistic, in one report.

:func:`check_dataset` reads like the loaders but never stops at the first bad row: it collects everything, so
that a user fixing a dataset sees all of its problems at once (``querylife data check``).
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .images import ImageDataError, check_image
from .readers import _load_catalog, _load_pairs, _text_column
from .schemas import BadRows, LabelScheme

__all__ = ["CheckReport", "Issue", "check_dataset", "WARNING_KINDS"]

# Worth knowing but not wrong: the loaders accept these (duplicates are merged; a query without positives is
# fine for evaluation, useless for training).
WARNING_KINDS = frozenset({"pairs: duplicate pair", "pairs: query without positive"})


@dataclass
class Issue:
    """One example of a problem: where it is and what is wrong."""

    kind: str
    file: str | None
    row: int | None
    field: str | None
    message: str

    @property
    def severity(self) -> str:
        return "warning" if self.kind in WARNING_KINDS else "error"


@dataclass
class ImageStats:
    """Image files of the catalogue's (valid) products; ``checked`` is False when decoding was skipped."""

    n_ok: int = 0
    n_missing_path: int = 0
    n_missing_file: int = 0
    n_corrupt: int = 0
    n_with_path: int = 0
    checked: bool = True


@dataclass
class CheckReport:
    """Everything :func:`check_dataset` found.

    ``counts`` maps an issue kind (``"catalog: empty title"``, ``"pairs: unknown label"``, ``"images: corrupt
    image"``, ...) to how many rows have it; ``errors`` keeps up to ``max_examples`` examples of each kind.
    Kinds in :data:`WARNING_KINDS` do not make :meth:`ok` false.
    """

    catalog_path: str
    pairs_path: str | None = None
    n_products: int = 0  # rows in the catalogue file
    n_products_ok: int = 0  # rows the loader would keep
    n_pairs: int = 0
    n_pairs_ok: int = 0
    n_queries: int = 0
    label_scheme: str | None = None
    errors: list[Issue] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    label_counts: dict[str, int] = field(default_factory=dict)
    label_gains: dict[str, float] = field(default_factory=dict)
    positive_labels: list[str] = field(default_factory=list)
    product_type_counts: dict[str, int] = field(default_factory=dict)
    pairs_per_query: dict[str, float] = field(default_factory=dict)
    positives_per_query: dict[str, float] = field(default_factory=dict)
    n_queries_without_positive: int = 0
    queries_without_positive: list[str] = field(default_factory=list)  # first max_examples of them
    n_products_without_pairs: int = 0
    images: ImageStats = field(default_factory=ImageStats)

    def n_errors(self) -> int:
        """Rows with an error (warnings excluded)."""
        return sum(n for k, n in self.counts.items() if k not in WARNING_KINDS)

    def n_warnings(self) -> int:
        return sum(n for k, n in self.counts.items() if k in WARNING_KINDS)

    def ok(self) -> bool:
        """True when nothing would make the loaders reject a row or an image."""
        return self.n_errors() == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["errors"] = [{**asdict(e), "severity": e.severity} for e in self.errors]
        d["ok"] = self.ok()
        d["n_errors"] = self.n_errors()
        d["n_warnings"] = self.n_warnings()
        return d

    def _denominator(self, kind: str) -> int:
        if kind.startswith("catalog:"):
            return self.n_products
        if kind == "pairs: query without positive":
            return self.n_queries
        if kind.startswith("pairs:"):
            return self.n_pairs
        if kind.startswith("images:"):
            return self.images.n_with_path
        return 0

    def to_markdown(self) -> str:
        """A readable report: summary, problems with counts and percentages, examples, statistics."""
        out: list[str] = []
        ne, nw = self.n_errors(), self.n_warnings()
        verdict = "OK" if self.ok() else f"{ne} problem{'s' * (ne != 1)}"
        if nw:
            verdict += f", {nw} warning{'s' * (nw != 1)}"
        out += [f"# Data check: {verdict}", ""]
        valid_products = f"{self.n_products_ok} valid ({_pct(self.n_products_ok, self.n_products)})"
        out += ["| | |", "|---|---|", f"| catalogue | `{self.catalog_path}` |",
                f"| products | {self.n_products} rows, {valid_products} |"]
        if self.pairs_path is not None:
            valid_pairs = f"{self.n_pairs_ok} valid ({_pct(self.n_pairs_ok, self.n_pairs)})"
            out += [f"| pairs | `{self.pairs_path}` |",
                    f"| pair rows | {self.n_pairs} rows, {valid_pairs} |",
                    f"| queries | {self.n_queries} |",
                    f"| label scheme | {self.label_scheme} |"]
        out.append("")

        out += ["## Problems", ""]
        if not self.counts:
            out += ["None found.", ""]
        else:
            out += ["| kind | severity | count | % |", "|---|---|---:|---:|"]
            order = sorted(self.counts.items(), key=lambda kv: (kv[0] in WARNING_KINDS, -kv[1], kv[0]))
            for kind, n in order:
                sev = "warning" if kind in WARNING_KINDS else "error"
                out.append(f"| {kind} | {sev} | {n} | {_pct(n, self._denominator(kind))} |")
            out += ["", "### Examples", ""]
            for e in self.errors:
                where = ", ".join(
                    x for x in (e.file and f"`{e.file}`", e.row is not None and f"row {e.row}",
                                e.field and f"field `{e.field}`") if x
                )
                out.append(f"- **{e.kind}**: {where}: {e.message}")
            out.append("")

        img = self.images
        out += ["## Images", ""]
        n = self.n_products_ok
        out += ["| | count | % of products |", "|---|---:|---:|"]
        if img.checked:
            out.append(f"| decoded fine | {img.n_ok} | {_pct(img.n_ok, n)} |")
        else:
            nw = img.n_with_path
            out.append(f"| with a path (files not checked) | {nw} | {_pct(nw, n)} |")
        out.append(f"| no image path | {img.n_missing_path} | {_pct(img.n_missing_path, n)} |")
        if img.checked:
            out.append(f"| file missing | {img.n_missing_file} | {_pct(img.n_missing_file, n)} |")
            out.append(f"| corrupt / unreadable | {img.n_corrupt} | {_pct(img.n_corrupt, n)} |")
        out.append("")

        if self.pairs_path is not None:
            total = sum(self.label_counts.values())
            out += ["## Labels", "", "| label | gain | positive | count | % |", "|---|---:|:---:|---:|---:|"]
            for lab, c in self.label_counts.items():
                pos = "yes" if lab in self.positive_labels else ""
                gain = self.label_gains.get(lab, float("nan"))
                out.append(f"| {lab} | {gain:g} | {pos} | {c} | {_pct(c, total)} |")
            out += ["", "## Queries", ""]
            ppq, pos = self.pairs_per_query, self.positives_per_query
            out += ["| | min | median | mean | max |", "|---|---:|---:|---:|---:|"]
            for name, st in (("pairs per query", ppq), ("positives per query", pos)):
                if st:
                    cells = f"{st['min']:g} | {st['median']:g} | {st['mean']:.2f} | {st['max']:g}"
                    out.append(f"| {name} | {cells} |")
            out += ["", f"Queries without any positive: {self.n_queries_without_positive} "
                        f"({_pct(self.n_queries_without_positive, self.n_queries)})"]
            if self.queries_without_positive:
                shown = ", ".join(f"`{q}`" for q in self.queries_without_positive)
                out.append(f"(e.g. {shown})")
            out += ["", f"Valid products that appear in no pair: {self.n_products_without_pairs} "
                        f"({_pct(self.n_products_without_pairs, self.n_products_ok)})", ""]

        out += ["## Product types", "", "| product type | products | % |", "|---|---:|---:|"]
        total = sum(self.product_type_counts.values())
        items = list(self.product_type_counts.items())
        for t, c in items[:30]:
            out.append(f"| {t} | {c} | {_pct(c, total)} |")
        if len(items) > 30:
            rest = sum(c for _, c in items[30:])
            out.append(f"| ({len(items) - 30} more types) | {rest} | {_pct(rest, total)} |")
        out.append("")
        return "\n".join(out)


def _pct(n: int, d: int) -> str:
    return f"{100.0 * n / d:.1f}%" if d else "-"


def _stats(values: pd.Series) -> dict[str, float]:
    if len(values) == 0:
        return {}
    v = values.to_numpy(dtype=float)
    return {
        "min": float(v.min()), "median": float(np.median(v)), "mean": float(v.mean()), "max": float(v.max())
    }


def _issues(bad: BadRows, prefix: str) -> tuple[list[Issue], dict[str, int]]:
    issues = [
        Issue(f"{prefix}: {e['reason']}", e["file"], e["row"], e["field"], e["message"]) for e in bad.examples
    ]
    return issues, {f"{prefix}: {k}": int(v) for k, v in bad.counts.items()}


def check_dataset(
    catalog_path: str | os.PathLike,
    pairs_path: str | os.PathLike | None = None,
    *,
    label_scheme: LabelScheme | str = "auto",
    check_images: bool = True,
    max_examples: int = 20,
    progress: bool = False,
) -> CheckReport:
    """Check a catalogue (and optionally its pairs) and report every problem found.

    Collects, without stopping: empty ids / titles / product types, duplicate product ids, pairs with an empty
    query, an unknown label or a product missing from the catalogue, conflicting or duplicate pairs, queries
    without any positive, and (``check_images``) missing or undecodable image files (each is fully decoded
    with PIL). Also gathers label, product-type and per-query statistics.

    With ``label_scheme="auto"`` and labels that fit no scheme together, the best-fitting scheme is used and
    the other labels are reported as unknown.

    Args:
        max_examples: examples kept per issue kind (counts are always complete).
        progress: progress bar while decoding images.

    Raises:
        DataError: only when a file cannot be read at all or lacks a required column.
    """
    cat_bad = BadRows(max_examples=max_examples)
    catalog, cat_rows, raw_cat = _load_catalog(catalog_path, skip_bad=True, report=cat_bad)
    cat_file = catalog.attrs.get("source", str(catalog_path))
    report = CheckReport(catalog_path=cat_file, n_products=len(raw_cat), n_products_ok=len(catalog))
    issues, counts = _issues(cat_bad, "catalog")
    report.product_type_counts = {str(k): int(v) for k, v in catalog["product_type"].value_counts().items()}

    if pairs_path is not None:
        pair_bad = BadRows(max_examples=max_examples)
        # Check pair ids against every id in the catalogue file, so that a pair naming a product whose row is
        # bad for another reason is not also reported as "unknown product".
        all_ids = set(_text_column(raw_cat["product_id"])) - {""}
        pairs, scheme, pair_rows = _load_pairs(
            pairs_path, catalog=all_ids, label_scheme=label_scheme, skip_bad=True, report=pair_bad,
            lenient_scheme=True,
        )
        report.pairs_path = pairs.attrs.get("source", str(pairs_path))
        report.n_pairs = pair_bad.n_rows
        report.n_pairs_ok = len(pairs)
        report.label_scheme = scheme.describe()
        report.label_gains = dict(scheme.gains)
        report.positive_labels = sorted(scheme.positive)
        canon = pairs["label"].map(scheme.canonical) if len(pairs) else pd.Series([], dtype=object)
        lc = Counter(canon)
        report.label_counts = {lab: int(lc.get(lab, 0)) for lab in scheme.labels}
        p_issues, p_counts = _issues(pair_bad, "pairs")
        issues += p_issues
        counts.update(p_counts)

        if len(pairs):
            by_q = pairs.groupby("query", sort=False)
            sizes = by_q.size()
            npos = by_q["positive"].sum()
            report.n_queries = int(len(sizes))
            report.pairs_per_query = _stats(sizes)
            report.positives_per_query = _stats(npos)
            no_pos = npos[npos == 0].index.tolist()
            report.n_queries_without_positive = len(no_pos)
            report.queries_without_positive = [str(q) for q in no_pos[:max_examples]]
            if no_pos:
                kind = "pairs: query without positive"
                counts[kind] = len(no_pos)
                first_row = pd.Series(pair_rows, index=pairs.index).groupby(pairs["query"]).min()
                for q in no_pos[:max_examples]:
                    issues.append(Issue(kind, report.pairs_path, int(first_row[q]), "label",
                                        f"query {q!r} has {int(sizes[q])} pairs and no positive label"))
        report.n_products_without_pairs = int((~catalog["product_id"].isin(set(pairs["product_id"]))).sum())

    img = ImageStats(checked=check_images)
    paths = catalog["image_path"].tolist()
    with_path = [(i, p) for i, p in enumerate(paths) if p is not None]
    img.n_missing_path = len(paths) - len(with_path)
    img.n_with_path = len(with_path)
    if check_images and with_path:
        results = _check_images([p for _, p in with_path], progress)
        img_counts: Counter = Counter()
        for (i, p), err in zip(with_path, results, strict=True):
            if err is None:
                img.n_ok += 1
                continue
            if err.kind == "missing":
                img.n_missing_file += 1
                kind = "images: missing image file"
            else:
                img.n_corrupt += 1
                kind = "images: corrupt image"
            if img_counts[kind] < max_examples:
                issues.append(Issue(kind, cat_file, int(cat_rows[i]), "image_path", f"{p}: {err.detail}"))
            img_counts[kind] += 1
        counts.update(img_counts)
    report.images = img
    report.errors = issues
    report.counts = counts
    return report


def _check_images(paths: list[str], progress: bool) -> list[ImageDataError | None]:
    def one(p: str) -> ImageDataError | None:
        try:
            check_image(p)
        except ImageDataError as e:
            return e
        return None

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(paths), desc="checking images", unit="img")
    out: list[ImageDataError | None] = []
    threads = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for r in pool.map(one, paths):
            out.append(r)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return out
