"""Label schemes: how the many ways relevance labels are written become a graded gain and a positive flag.

``exact/partial/irrelevant`` (WANDS, the demo storefront), ESCI ``E/S/C/I``, ``0/1``, graded ``1-4``: each scheme
turns a label into a gain for NDCG and a binary "positive" flag for training.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import DataError, UnknownLabelError

__all__ = [
    "LabelScheme",
    "LABEL_SCHEMES",
    "SCHEME_ALIASES",
    "make_label_scheme",
    "make_graded_scheme",
    "infer_label_scheme",
    "label_to_str",
    "positive_list",
    "scheme_name",
]


def label_to_str(value: Any) -> str:
    """Canonical text of a raw label value: ``3.0 -> "3"``, ``True -> "true"``, strings stripped.

    Readers give labels as whatever type the file had (CSV text, Parquet int64, JSON bool); the schemes work
    on text so that ``1``, ``1.0`` and ``"1"`` all mean the same grade.
    """
    if value is None:
        return ""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "true" if bool(value) else "false"
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        f = float(value)
        if math.isnan(f):
            return ""
        if f.is_integer():
            return str(int(f))
        return repr(f)
    return str(value).strip()


def _as_int(text: str) -> int | None:
    try:
        f = float(text)
    except ValueError:
        return None
    if math.isfinite(f) and f.is_integer():
        return int(f)
    return None


@dataclass(frozen=True)
class LabelScheme:
    """How the label strings of a dataset map to graded gains and to positive / negative.

    Attributes:
        name: scheme name (``exact_partial_irrelevant``, ``esci``, ``binary``, ``graded`` or a custom one).
        gains: canonical label -> gain used by NDCG.
        positive: canonical labels that count as relevant (training positives, classification positives).
        aliases: lower-cased alternative spellings -> canonical label (``"exact" -> "E"`` for ESCI).
            Matching is case-insensitive: every canonical label is an alias of itself in lower case.
    """

    name: str
    gains: dict[str, float]
    positive: frozenset[str]
    aliases: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [p for p in self.positive if p not in self.gains]
        if unknown:
            raise DataError(
                f"label scheme {self.name!r}: positive labels {unknown} are not among {self.labels}"
            )
        # Frozen dataclass: build the lookup table once through object.__setattr__.
        lookup = {k.lower(): k for k in self.gains}
        lookup.update({k.lower(): v for k, v in self.aliases.items()})
        object.__setattr__(self, "_lookup", lookup)

    def __hash__(self) -> int:  # the generated one would fail on the dict fields
        return hash((self.name, tuple(sorted(self.gains.items())), self.positive))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for checkpoints and reports); :meth:`from_dict` restores it."""
        return {"name": self.name, "gains": dict(self.gains), "positive": sorted(self.positive),
                "aliases": dict(self.aliases)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LabelScheme:
        """Inverse of :meth:`to_dict`."""
        return cls(str(d["name"]), {str(k): float(v) for k, v in d["gains"].items()},
                   frozenset(str(p) for p in d["positive"]), dict(d.get("aliases", {})))

    @property
    def labels(self) -> list[str]:
        """Canonical labels, highest gain first."""
        return sorted(self.gains, key=lambda k: (-self.gains[k], k))

    def canonical(self, label: Any) -> str:
        """The canonical spelling of ``label``; raises :class:`UnknownLabelError` for unknown labels."""
        text = label_to_str(label)
        if text in self.gains:
            return text
        lookup: dict[str, str] = self._lookup  # type: ignore[attr-defined]
        hit = lookup.get(text.lower())
        if hit is not None:
            return hit
        as_int = _as_int(text)  # "3.0" from a CSV column for graded labels
        if as_int is not None and str(as_int) in self.gains:
            return str(as_int)
        raise UnknownLabelError(f"unknown label {text!r}; allowed ({self.name}): {', '.join(self.labels)}")

    def gain(self, label: Any) -> float:
        """Graded gain of ``label`` for NDCG."""
        return self.gains[self.canonical(label)]

    def is_positive(self, label: Any) -> bool:
        """Whether ``label`` counts as relevant."""
        return self.canonical(label) in self.positive

    def describe(self) -> str:
        """One line, e.g. ``esci: E=1 (positive), S=0.1, C=0.01, I=0``."""
        items = [f"{k}={self.gains[k]:g}" + (" (positive)" * (k in self.positive)) for k in self.labels]
        return f"{self.name}: " + ", ".join(items)


EXACT_PARTIAL_IRRELEVANT = "exact_partial_irrelevant"

_EXACT_PARTIAL_IRRELEVANT = LabelScheme(
    EXACT_PARTIAL_IRRELEVANT, {"exact": 2.0, "partial": 1.0, "irrelevant": 0.0}, frozenset({"exact"}),
)
# Gains from the Amazon Shopping Queries (ESCI) paper's NDCG setup.
_ESCI = LabelScheme(
    "esci",
    {"E": 1.0, "S": 0.1, "C": 0.01, "I": 0.0},
    frozenset({"E"}),
    aliases={"exact": "E", "substitute": "S", "complement": "C", "irrelevant": "I"},
)
_BINARY = LabelScheme("binary", {"1": 1.0, "0": 0.0}, frozenset({"1"}), aliases={"true": "1", "false": "0"})


def make_graded_scheme(
    grades: Iterable[int], threshold: int | None = None, name: str = "graded"
) -> LabelScheme:
    """Scheme for integer grades: gain = grade - lowest grade; positive = grade >= ``threshold`` (def. top).

    Every integer between the lowest and the highest grade given is a valid label.
    """
    values = sorted({int(g) for g in grades})
    if not values:
        raise DataError("graded label scheme needs at least one grade")
    lo, hi = values[0], values[-1]
    # Every integer between the lowest and highest grade seen is valid, even if the sample lacks it.
    full = range(lo, hi + 1)
    thr = hi if threshold is None else int(threshold)
    positive = frozenset(str(g) for g in full if g >= thr)
    if not positive:
        raise DataError(f"graded label scheme: positive threshold {thr} is above the top grade {hi}")
    return LabelScheme(name, {str(g): float(g - lo) for g in full}, positive)


LABEL_SCHEMES: dict[str, LabelScheme] = {
    EXACT_PARTIAL_IRRELEVANT: _EXACT_PARTIAL_IRRELEVANT,
    "esci": _ESCI,
    "binary": _BINARY,
    # The fixed "graded" entry is the common 0-3 scale; make_label_scheme("graded", labels) fits the data's.
    "graded": make_graded_scheme(range(4)),
}

# Old names still accepted (configs, the command line) with a FutureWarning, which users see: old -> current name.
SCHEME_ALIASES: dict[str, str] = {"epi": EXACT_PARTIAL_IRRELEVANT}

_AUTO_ORDER = (EXACT_PARTIAL_IRRELEVANT, "esci", "binary")


def scheme_name(name: str) -> str:
    """``name`` lower-cased; a deprecated alias (``epi``) becomes the current name, with a FutureWarning."""
    key = str(name).strip().lower()
    if key in SCHEME_ALIASES:
        new = SCHEME_ALIASES[key]
        warnings.warn(f"label scheme {key!r} is now called {new!r}; the old name will go", FutureWarning,
                      stacklevel=3)
        return new
    return key


def _fits(scheme: LabelScheme, values: Iterable[str]) -> list[str]:
    """Values that ``scheme`` does not accept."""
    bad = []
    for v in values:
        try:
            scheme.canonical(v)
        except UnknownLabelError:
            bad.append(v)
    return bad


def infer_label_scheme(labels: Iterable[Any]) -> tuple[LabelScheme, list[str]]:
    """Best-fitting scheme for ``labels`` and the label values it does not accept (empty when it fits).

    Order of preference when several fit: exact_partial_irrelevant, esci, binary, graded (so
    ``exact/irrelevant`` alone is exact_partial_irrelevant and ``0/1`` is binary). Non-integer, non-keyword
    values fit nothing.
    """
    values = sorted({label_to_str(v) for v in labels} - {""})
    if not values:
        raise DataError("cannot infer the label scheme: there are no labels")
    candidates: list[tuple[LabelScheme, list[str]]] = []
    for name in _AUTO_ORDER:
        scheme = LABEL_SCHEMES[name]
        bad = _fits(scheme, values)
        if not bad:
            return scheme, []
        candidates.append((scheme, bad))
    ints = [_as_int(v) for v in values]
    grades = [g for g in ints if g is not None]
    if grades:
        bad = [v for v, g in zip(values, ints, strict=True) if g is None]
        graded = make_graded_scheme(grades)
        if not bad:
            return graded, []
        candidates.append((graded, bad))
    scheme, bad = min(candidates, key=lambda c: len(c[1]))
    return scheme, bad


def make_label_scheme(
    name: str = "auto",
    labels: Iterable[Any] | None = None,
    *,
    positive: Iterable[str] | None = None,
    gains: Mapping[str, float] | None = None,
    threshold: int | None = None,
) -> LabelScheme:
    """Build a label scheme by name, or pick one from the label values (``name="auto"``).

    Args:
        name: ``auto``, ``exact_partial_irrelevant`` (old name ``epi``, deprecated), ``esci``, ``binary``,
            ``graded``, or any other name together with ``gains`` (a custom scheme).
        labels: the label values of the dataset. Needed for ``auto`` and ``graded``; for the fixed schemes
            every value is checked and an unknown one raises :class:`DataError` naming it.
        positive: override which labels count as positive (e.g. ``["E", "S"]`` to train on substitutes too).
        gains: override (or, for a custom scheme, define) the gains; keys are label spellings.
        threshold: for ``graded``, the lowest grade that counts as positive (default: the top grade).

    Raises:
        DataError: when the scheme cannot be decided, naming the offending label value.
    """
    label_list = None if labels is None else list(labels)
    key = scheme_name(name)
    if key == "auto":
        if label_list is None:
            raise DataError("label scheme 'auto' needs the label values to inspect")
        scheme, bad = infer_label_scheme(label_list)
        if bad:
            shown = ", ".join(repr(b) for b in bad[:5]) + (" ..." if len(bad) > 5 else "")
            raise UnknownLabelError(
                f"cannot decide the label scheme: label {shown} fits none of exact_partial_irrelevant, "
                f"esci (E/S/C/I), binary (0/1) or graded (integers) together with the other labels "
                f"(closest: {scheme.name}); pass the label scheme explicitly"
            )
        if scheme.name == "graded" and threshold is not None:
            scheme = make_graded_scheme((int(k) for k in scheme.gains), threshold)
    elif key == "graded":
        if label_list is None:
            scheme = make_graded_scheme(range(4), threshold)
        else:
            texts = sorted({label_to_str(v) for v in label_list} - {""})
            ints = [_as_int(t) for t in texts]
            for t, g in zip(texts, ints, strict=True):
                if g is None:
                    raise UnknownLabelError(f"graded labels must be integers; got {t!r}")
            scheme = make_graded_scheme([g for g in ints if g is not None], threshold)
    elif key in LABEL_SCHEMES:
        scheme = LABEL_SCHEMES[key]
    elif gains is not None:
        g = {label_to_str(k): float(v) for k, v in gains.items()}
        top = max(g.values())
        pos = frozenset(positive_list(positive)) if positive is not None else frozenset(
            k for k, v in g.items() if v == top
        )
        scheme = LabelScheme(name, g, pos)
        gains = positive = None  # already applied
    else:
        raise DataError(
            f"unknown label scheme {name!r}; choose one of auto, {', '.join(LABEL_SCHEMES)} or pass gains"
        )

    if gains is not None:
        new = dict(scheme.gains)
        for k, v in gains.items():
            try:
                new[scheme.canonical(k)] = float(v)
            except UnknownLabelError:
                new[label_to_str(k)] = float(v)  # a label the built-in scheme lacks: add it
        scheme = LabelScheme(scheme.name, new, scheme.positive, scheme.aliases)
    if positive is not None:
        pos = frozenset(scheme.canonical(p) for p in positive_list(positive))
        scheme = LabelScheme(scheme.name, scheme.gains, pos, scheme.aliases)
    if label_list is not None and key != "auto":
        texts = sorted({label_to_str(v) for v in label_list} - {""})
        bad = _fits(scheme, texts)
        if bad:
            raise UnknownLabelError(
                f"unknown label {bad[0]!r}"
                + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
                + f"; allowed ({scheme.name}): {', '.join(scheme.labels)}"
            )
    return scheme


def positive_list(positive: Iterable[str] | str) -> list[str]:
    """``positive`` as a list; a bare string is one label, not its characters."""
    if isinstance(positive, str):
        return [positive]
    return [label_to_str(p) for p in positive]


