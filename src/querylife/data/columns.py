"""Which column of a user's file feeds which field: the ``data.columns`` mapping, then common aliases.

A catalogue or pairs file written by someone else rarely uses querylife's column names (``image`` or
``image_url`` for ``image_path``, ``sku`` for ``product_id``, ``category`` for ``product_type``...). For each
field, in this order:

1. ``data.columns`` (``--column FIELD=COLUMN``) names the column; an empty name means "no column for this
   field" (optional fields only);
2. the column named exactly like the field;
3. one column whose name, normalised (lower case, runs of anything but letters and digits turned into ``_``), is
   the field or one of its aliases (:data:`CATALOG_ALIASES`, :data:`PAIRS_ALIASES`). Two such columns are an
   error asking for ``--column``: guessing between ``image`` and ``image_url`` could train on the wrong one.

What is not used for a field: ``attr_*`` catalogue columns are gathered into ``attributes``; ``Unnamed: N``
columns (a saved pandas index), columns with an empty name and a file's own column named like a field that
``data.columns`` feeds from another column are ignored (dropped); every other column is kept as it is (in the
catalogue, ``data.text_fields`` can add it to the product text).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .errors import DataError

__all__ = [
    "CATALOG_REQUIRED",
    "CATALOG_OPTIONAL",
    "PAIRS_REQUIRED",
    "PAIRS_OPTIONAL",
    "FIELDS",
    "CATALOG_ALIASES",
    "PAIRS_ALIASES",
    "ColumnChoice",
    "choose_columns",
    "normalise_name",
    "check_mapping",
]

CATALOG_REQUIRED = ("product_id", "title", "product_type")
CATALOG_OPTIONAL = ("image_path", "attributes", "group_id")
PAIRS_REQUIRED = ("query", "product_id", "label")
PAIRS_OPTIONAL = ("split",)
# Every field data.columns may name (product_id is in both files).
FIELDS = tuple(dict.fromkeys(CATALOG_REQUIRED + CATALOG_OPTIONAL + PAIRS_REQUIRED + PAIRS_OPTIONAL))

# Normalised alternative names. Google Merchant feeds (id, title, image_link, product_type, item_group_id),
# Amazon-style (asin, parent_asin) and common spreadsheet headers are covered.
CATALOG_ALIASES: dict[str, tuple[str, ...]] = {
    "product_id": ("sku", "item_id", "id", "asin", "product_sku"),
    "title": ("name", "product_name", "product_title", "item_name"),
    "product_type": ("category", "product_category", "type"),
    "image_path": ("image", "image_url", "image_uri", "img", "img_url", "image_file", "image_link", "picture",
                   "photo"),
    "attributes": (),
    "group_id": ("item_group_id", "parent_id", "parent_asin"),
}
PAIRS_ALIASES: dict[str, tuple[str, ...]] = {
    "query": ("search_term", "keyword", "search_query", "query_text"),
    # Not "id": in a pairs file that is usually the judgement's own id.
    "product_id": ("sku", "item_id", "asin", "product_sku"),
    "label": ("relevance", "grade", "esci_label", "judgement", "judgment", "relevance_label", "median_relevance"),
    "split": (),
}

_IGNORED = re.compile(r"^(Unnamed: \d+(_level_\d+)?|\s*)$")


def normalise_name(name: str) -> str:
    """``"Image URL"`` -> ``"image_url"``: lower case, runs of non-alphanumerics become one ``_``."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")


def check_mapping(mapping: Mapping[str, str | None]) -> dict[str, str]:
    """``data.columns`` validated: every key a field of :data:`FIELDS`; values as text (None -> ``""``).

    Raises:
        DataError: an unknown field name (listing the known ones), or a required field mapped to nothing.
    """
    out: dict[str, str] = {}
    for key, value in mapping.items():
        name = str(key).strip()
        if name not in FIELDS:
            raise DataError(f"data.columns: unknown field {name!r}; fields are {', '.join(FIELDS)} "
                            "(the key is querylife's field, the value your file's column)")
        text = "" if value is None else str(value)
        if not text.strip() and name in CATALOG_REQUIRED + PAIRS_REQUIRED:
            raise DataError(f"data.columns: {name} is required and cannot be mapped to no column")
        out[name] = text
    return out


@dataclass
class ColumnChoice:
    """Which column of one file feeds each field, and what happens to the others.

    Attributes:
        used: field -> the file's column (only fields that have one).
        how: field -> ``"data.columns"``, ``"name"`` (named like the field) or ``"alias"``.
        ignored: columns dropped (see the module docstring), with the reason.
        extra: columns kept as they are, not fed to a field.
        disabled: fields that ``data.columns`` maps to no column (``--column image_path=``).
    """

    file: str
    used: dict[str, str] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)

    @property
    def rename(self) -> dict[str, str]:
        """File column -> field, for the columns that are not already named like their field."""
        return {col: f for f, col in self.used.items() if col != f}

    def column(self, name: str) -> str:
        """The file's name for field ``name`` (itself when unmapped): error messages name what the user sees."""
        return self.used.get(name, name)

    def mapped(self) -> list[str]:
        """``"title <- 'name' (alias)"`` for every field fed by a column not named like it."""
        return [f"{f} <- {col!r} ({self.how[f]})" for f, col in self.used.items() if col != f]


def choose_columns(
    columns: Iterable[object],
    *,
    required: tuple[str, ...],
    optional: tuple[str, ...],
    aliases: Mapping[str, tuple[str, ...]],
    mapping: Mapping[str, str] | None = None,
    file: str,
    shared: Iterable[str] = ("product_id",),
) -> ColumnChoice:
    """Pick the column for each field of one file (see the module docstring for the order).

    ``shared`` fields exist in both files (``product_id``): a ``data.columns`` entry for one of them applies to
    a file only when that file has the column, otherwise the file's own column is looked up as usual.

    Raises:
        DataError: naming the file: a mapped column that is not there, two alias columns for one field, one
            column mapped to two fields, or a required field without a column (listing the columns found and
            the names accepted).
    """
    found = [str(c) for c in columns]
    mapping = dict(mapping or {})
    shared = set(shared)
    choice = ColumnChoice(file)
    for col in found:
        if _IGNORED.match(col):
            choice.ignored[col] = "an unnamed column (a saved index?)"
    usable = [c for c in found if c not in choice.ignored]
    taken: dict[str, str] = {}  # column -> field

    def take(fld: str, col: str, how: str) -> None:
        if col in taken:
            raise DataError(f"column {col!r} would feed both {taken[col]} and {fld}; map them with --column "
                            f"FIELD=COLUMN (data.columns)", file=file, field=col)
        taken[col] = fld
        choice.used[fld] = col
        choice.how[fld] = how

    fields = required + optional
    # Pass 1: explicit mappings, so that auto-detection never grabs a column the user gave to another field.
    todo = []
    for fld in fields:
        if fld in mapping:
            col = mapping[fld]
            if not col.strip():
                choice.disabled.append(fld)
                continue
            if col in usable:
                take(fld, col, "data.columns")
                continue
            if fld not in shared:
                raise DataError(f"data.columns maps {fld} to {col!r}, but there is no such column; found columns "
                                f"{found}", file=file, field=col)
        todo.append(fld)
    # Pass 2: exact names, then aliases.
    for fld in todo:
        if fld in usable and fld not in taken:
            take(fld, fld, "name")
    for fld in todo:
        if fld in choice.used:
            continue
        names = {fld, *aliases.get(fld, ())}
        hits = [c for c in usable if c not in taken and normalise_name(c) in names]
        if len(hits) > 1:
            raise DataError(
                f"several columns could be {fld}: {hits}; say which with --column {fld}=COLUMN "
                f"(data.columns.{fld})", file=file, field=fld,
            )
        if hits:
            take(fld, hits[0], "alias")
    for fld in required:
        if fld not in choice.used:
            accepted = [fld, *aliases.get(fld, ())]
            raise DataError(
                f"missing required column {fld!r}; found columns: {found}. Also recognised: {accepted[1:]}; or name "
                f"yours with --column {fld}=COLUMN (data.columns.{fld})",
                file=file, field=fld,
            )
    for fld, col in choice.used.items():
        if col != fld and fld in usable and fld not in taken:
            choice.ignored[fld] = f"{fld} comes from {col!r}"
    choice.extra = [c for c in usable if c not in taken and c not in choice.ignored]
    return choice
