"""Dataset check: every bad row, missing or corrupt image and label statistic, in one report.

:func:`check_dataset` reads with the loaders' own readers (same column mapping, same normalisation, same
messages) but never stops at the first bad row: it collects everything, so that a user fixing a dataset sees all
of its problems at once (``querylife data check``). Problems (rows or images the loaders would reject) make
:meth:`CheckReport.ok` false; warnings (an unused image-like column, a text-only catalogue, titles with control
characters or cut to length, duplicate pairs, queries without a positive) do not, but the report lists them
first.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .errors import BadRows, DataError
from .image_urls import ImageFetch, ImageURLsRefused, is_url, localise_image_urls
from .images import ImageDataError, check_image
from .labels import LabelScheme
from .notes import Notes, warn_text_only
from .readers import read_catalog, read_pairs, text_column
from .splits import choose_splits
from .titles import MAX_TITLE_CHARS

__all__ = ["CheckReport", "Issue", "check_dataset", "check_format", "WARNING_KINDS"]

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
    notes: list[dict[str, str]] = field(default_factory=list)  # Notes.to_list(): how the data was read, warnings

    def n_errors(self) -> int:
        """Rows with an error (warnings excluded)."""
        return sum(n for k, n in self.counts.items() if k not in WARNING_KINDS)

    def warnings(self) -> list[str]:
        """The loading warnings (not the row-level ones of :data:`WARNING_KINDS`)."""
        return [n["text"] for n in self.notes if n["level"] == "warning"]

    def n_warnings(self) -> int:
        """Rows with a warning kind plus loading warnings."""
        return sum(n for k, n in self.counts.items() if k in WARNING_KINDS) + len(self.warnings())

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
        if kind == "images: image URL not downloaded":
            return self.n_products_ok
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
        if self.warnings():
            out += ["## Warnings", ""] + [f"- {w}" for w in self.warnings()] + [""]
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
        info = [n["text"] for n in self.notes if n["level"] != "warning"]
        if info:
            out += ["## How the data was read", ""] + [f"- {t}" for t in info] + [""]

        out += ["## Problems", ""]
        if not self.counts:
            out += ["None found" + (" (but see the warnings above)." if self.warnings() else "."), ""]
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
    columns: dict[str, str] | None = None,
    official_split: bool = True,
    split: tuple[float, float, float] = (0.7, 0.1, 0.2),
    split_seed: int = 0,
    split_by: str = "query",
    max_title_chars: int | None = MAX_TITLE_CHARS,
    images: ImageFetch | None = None,
) -> CheckReport:
    """Check a catalogue (and optionally its pairs) and report every problem found.

    Collects, without stopping: empty ids / titles / product types, duplicate product ids, pairs with an empty
    query, an unknown label, a bad ``split`` value or a product missing from the catalogue, conflicting or
    duplicate pairs, queries without any positive, a split that cannot be made, image URLs that are not
    downloaded (``images.download`` off) or cannot be, and (``check_images``) missing or undecodable image files
    (each is fully decoded with PIL). Also gathers label, product-type and per-query statistics, and the loaders'
    notes (columns used, kept and ignored, the split rule, warnings) into ``CheckReport.notes``.

    With ``label_scheme="auto"`` and labels that fit no scheme together, the best-fitting scheme is used and
    the other labels are reported as unknown.

    Args:
        max_examples: examples kept per issue kind (counts are always complete).
        progress: progress bar while decoding images.
        columns, official_split, split, split_seed, split_by, max_title_chars, images: as in ``DataConfig``
            (``data.columns`` and so on), so that the check reads the data as training will.

    Raises:
        DataError: only when a file cannot be read at all, lacks a required column or the column mapping is
            wrong or ambiguous.
    """
    notes = Notes()
    cat_bad = BadRows(max_examples=max_examples)
    cat = read_catalog(catalog_path, columns=columns, skip_bad=True, report=cat_bad, notes=notes,
                       max_title_chars=max_title_chars)
    catalog, cat_rows, raw_cat = cat.table, cat.rows, cat.raw
    cat_file = cat.file
    report = CheckReport(catalog_path=cat_file, n_products=len(raw_cat), n_products_ok=len(catalog))
    issues, counts = _issues(cat_bad, "catalog")
    report.product_type_counts = {str(k): int(v) for k, v in catalog["product_type"].value_counts().items()}

    if pairs_path is not None:
        pair_bad = BadRows(max_examples=max_examples)
        # Check pair ids against every id in the catalogue file, so that a pair naming a product whose row is
        # bad for another reason is not also reported as "unknown product".
        all_ids = set(text_column(raw_cat["product_id"])) - {""}
        read, scheme = read_pairs(
            pairs_path, catalog=all_ids, label_scheme=label_scheme, columns=columns, split_column=official_split,
            used_elsewhere=(split_by,), skip_bad=True, report=pair_bad, notes=notes, lenient_scheme=True,
        )
        pairs, pair_rows = read.table, read.rows
        report.pairs_path = read.file
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
            try:  # the split training would use, on the pairs it would keep
                choose_splits(pairs, split, split_seed, group_by=split_by, own_split=official_split, notes=notes)
            except DataError as err:  # it depends on the settings (data.split*), not only on the rows: a warning
                notes.warn("split-failed", f"split: training with these settings would stop: {err}")
        report.n_products_without_pairs = int((~catalog["product_id"].isin(set(pairs["product_id"]))).sum())

    img = ImageStats(checked=check_images)
    image_col = cat.columns.column("image_path")
    paths = catalog["image_path"].tolist()
    img_bad = BadRows(max_examples=max_examples)
    n_refused = 0
    try:
        paths = localise_image_urls(paths, fetch=images or ImageFetch(), file=cat_file, column=image_col,
                                    rows=cat_rows.tolist(), skip_bad=True, report=img_bad, notes=notes,
                                    progress=progress)
    except ImageURLsRefused as err:
        n_refused = err.n_urls
        kind = "images: image URL not downloaded"
        counts[kind] = n_refused
        for k, row in enumerate(err.rows[:max_examples]):
            issues.append(Issue(kind, cat_file, row, image_col, err.detail if k == 0 else "not downloaded"))
    i_issues, i_counts = _issues(img_bad, "images")
    issues += i_issues
    counts.update(i_counts)
    with_path = [(i, p) for i, p in enumerate(paths) if p is not None and not is_url(p)]
    img.n_missing_path = len(paths) - len(with_path) - n_refused
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
                issues.append(Issue(kind, cat_file, int(cat_rows[i]), image_col, f"{p}: {err.detail}"))
            img_counts[kind] += 1
        counts.update(img_counts)
    if len(catalog) and not n_refused:
        if not with_path:
            warn_text_only(notes, "no image path")
        elif check_images and not img.n_ok:
            warn_text_only(notes, "no image could be read")
    report.images = img
    report.errors = issues
    report.counts = counts
    report.notes = notes.to_list()
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


def check_format(
    path: str | os.PathLike,
    *,
    format: str = "auto",
    label_scheme: str = "auto",
    split: tuple[float, float, float] = (0.7, 0.1, 0.2),
    split_seed: int = 0,
    split_by: str = "query",
    official_split: bool = True,
    max_title_chars: int | None = MAX_TITLE_CHARS,
    **format_options: Any,
) -> tuple[str, dict[str, Any], bool]:
    """Check a public data set in its own layout: read it skipping and counting bad rows, summarise, and say how
    it would be split. Returns the Markdown text, a JSON-ready summary and whether no row was rejected.

    ``format_options``: passed to :func:`~querylife.data.formats.load_format` (``locale``, ``version``...).
    """
    from .formats import load_format

    bad = BadRows()
    notes = Notes()
    loaded = load_format(path, format=format, label_scheme=label_scheme, skip_bad=True, report=bad, notes=notes,
                         official_split=official_split, split_by=split_by, max_title_chars=max_title_chars,
                         **format_options)
    pairs, catalog = loaded.pairs, loaded.catalog
    try:
        choose_splits(pairs, split, split_seed, group_by=split_by, own_split=official_split, notes=notes)
    except DataError as err:  # it depends on the settings (data.split*), not only on the rows: a warning
        notes.warn("split-failed", f"split: training with these settings would stop: {err}")
    if not catalog["image_path"].notna().any():
        warn_text_only(notes, "the format has no images")
    labels = pairs["label"].value_counts().sort_index()
    payload = {
        "format": loaded.format,
        "path": str(path),
        "products": len(catalog),
        "pairs": len(pairs),
        "queries": int(pairs["query"].nunique()),
        "label_counts": {str(k): int(v) for k, v in labels.items()},
        "positives": int(pairs["positive"].sum()),
        "queries_without_positive": int((~pairs.groupby("query")["positive"].any()).sum()),
        "product_types": int(catalog["product_type"].nunique()),
        "products_with_image": int(catalog["image_path"].notna().sum()),
        "bad_rows": bad.to_dict(),
        "notes": notes.to_list(),
    }
    warnings = [n.text for n in notes.warnings]
    lines = [f"# data check: {path} ({loaded.format})", ""]
    if warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    lines += [
        f"- products: {payload['products']}; labelled pairs: {payload['pairs']}; queries: {payload['queries']}",
        "- labels: " + ", ".join(f"{k}: {v} ({100 * v / max(1, len(pairs)):.1f}%)" for k, v in labels.items()),
        f"- positives ({loaded.label_scheme.name} scheme): {payload['positives']}; queries without a positive: "
        f"{payload['queries_without_positive']}",
        f"- product types: {payload['product_types']}; products with an image: {payload['products_with_image']}",
        f"- {bad.summary()}" if bad.total else "- no bad rows",
    ]
    lines += [f"- {n.text}" for n in notes if n.level != "warning"]
    # Repeated judgements are merged (conflicts to the lower label) and reported, not failures of the data.
    merged = {"duplicate pair", "conflicting duplicate"}
    ok = not any(n for r, n in bad.counts.items() if r not in merged)
    return "\n".join(lines) + "\n", payload, ok
