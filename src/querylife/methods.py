"""The methods a suite can run: baselines (untrained) and trained variants, each a name, a description and the
config overrides that make it.

``querylife`` is Query-LIFE as configured; every other trained method changes one thing against it (the fusion, a
loss term, a false-negative judge). Old names (``full``, ``fn_*``) are accepted as aliases with a deprecation
note, so earlier commands still run.

Example:
    >>> resolve_methods(["bm25", "querylife", "mask_guide"])
    ('bm25', 'querylife', 'mask_guide')
    >>> METHODS["mean"].overrides
    {'model.fusion.mode': 'mean'}
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


class MethodError(ValueError):
    """A method name (or checkpoint) that cannot be run; the message names it and, for names, the known ones."""


@dataclass(frozen=True)
class Method:
    """One row of a suite's table.

    ``overrides``: dotted config keys applied on top of the experiment config (trained methods only);
    ``needs_describer``: the method trains with generated descriptions (GenFilt stage 1), so it runs only when a
    describer is configured; ``in_default``: part of the suite when no methods are named.
    """

    name: str
    description: str
    trained: bool = True
    overrides: Mapping[str, Any] = field(default_factory=dict)
    needs_describer: bool = False
    # False: run only when named (a fusion mode under measurement, or one that equals querylife under the defaults)
    in_default: bool = True


NO_AUX: dict[str, float] = {"loss.query_title": 0.0, "loss.query_image": 0.0, "loss.title_image": 0.0}

_ALL: tuple[Method, ...] = (
    Method("bm25", "BM25 on product text (bm25s)", trained=False),
    Method("zero_shot", "untrained text tower: cosine(query, title)", trained=False),
    Method("querylife", "Query-LIFE: query+type gate, all loss terms"),
    Method("title_only", "title vector only (trained)", overrides={"model.fusion.mode": "title", **NO_AUX}),
    Method("image_only", "image vector only (trained)", overrides={"model.fusion.mode": "image", **NO_AUX}),
    Method("mean", "mean fusion, all loss terms", overrides={"model.fusion.mode": "mean"}),
    Method("concat", "concat + MLP fusion, all loss terms", overrides={"model.fusion.mode": "concat"}),
    Method("type_gate", "ablation: type-only gate (query-independent)", overrides={"model.fusion.mode": "type_gate"}),
    Method(
        "query_gate",
        "Query-LIFE's query+type gate, trained (selected after the gate started)",
        overrides={"model.fusion.mode": "query_type_gate"},
        in_default=False,
    ),
    Method(
        "query_gate_residual",
        "measurement (issue 14): query+type gate's blend + concat's MLP as a query-independent residual",
        overrides={"model.fusion.mode": "query_type_gate_residual"},
        in_default=False,
    ),
    Method(
        "dev_type_gate",
        "trained as mean fusion, then one image weight per product type picked on dev",
        overrides={"model.fusion.mode": "dev_type_gate"},
        in_default=False,
    ),
    Method(
        "no_fused_term",
        "ablation: per-modality alignment only (no query-fused term)",
        overrides={"loss.query_fused": 0.0},
    ),
    Method("no_query_title", "ablation: query-title term off", overrides={"loss.query_title": 0.0}),
    Method("no_query_image", "ablation: query-image term off", overrides={"loss.query_image": 0.0}),
    Method("no_title_image", "ablation: title-image term off", overrides={"loss.title_image": 0.0}),
    Method("hard_negatives", "ablation: + 1 labelled hard negative per pair", overrides={"train.hard_negatives": 1}),
    Method(
        "separate_query_head",
        "ablation: queries get their own projection head",
        overrides={"model.separate_query_projection": True},
    ),
    Method(
        "mask_duplicate_titles",
        "false negatives: same-title duplicates masked",
        overrides={"train.false_negative_judge": "duplicate_title"},
    ),
    Method(
        "mask_guide",
        "false negatives: GIST-style guide model on titles",
        overrides={"train.false_negative_judge": "guide"},
    ),
    # GenFilt proper: needs generated descriptions (`querylife genfilt describe`, or a describer configured for the
    # demo), so these are not in the default list.
    Method(
        "mask_genfilt_descriptions",
        "false negatives: GenFilt similarity judge on generated descriptions",
        overrides={"train.false_negative_judge": "descriptions"},
        needs_describer=True,
    ),
    Method(
        "mask_genfilt_generative",
        "false negatives: GenFilt similarity prefilter + generative yes/no judge",
        overrides={"train.false_negative_judge": "generative"},
        needs_describer=True,
    ),
)

#: The method every other is compared against (the report's Δ column, the GenFilt table's "no filter" row).
REFERENCE_METHOD = "querylife"

#: Every method by name, in the order of the demo's table.
METHODS: Mapping[str, Method] = MappingProxyType({m.name: m for m in _ALL})

#: Names used before the rename -> current names (accepted with a deprecation note).
ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "full": "querylife",
        "fn_duplicate_title": "mask_duplicate_titles",
        "fn_guide": "mask_guide",
        "fn_descriptions": "mask_genfilt_descriptions",
        "fn_generative": "mask_genfilt_generative",
    }
)

#: The methods run when none are named: everything that runs offline without a generative describer.
DEFAULT_METHODS: tuple[str, ...] = tuple(m.name for m in _ALL if not m.needs_describer and m.in_default)

#: The methods that need generated descriptions (GenFilt stage 1).
NEEDS_DESCRIBER: tuple[str, ...] = tuple(m.name for m in _ALL if m.needs_describer)


def resolve_method(name: str) -> str:
    """The current name of method ``name``: itself, or the new name of an old alias (with a ``FutureWarning``).

    Raises :class:`MethodError` naming the known methods for anything else.
    """
    name = name.strip()
    if name in METHODS:
        return name
    if name in ALIASES:
        new = ALIASES[name]
        warnings.warn(
            f"method {name!r} was renamed {new!r}; the old name still works but will be removed",
            FutureWarning,
            stacklevel=3,
        )
        return new
    raise MethodError(f"unknown method {name!r}; known: {', '.join(METHODS)}")


def resolve_methods(names: Iterable[str]) -> tuple[str, ...]:
    """:func:`resolve_method` for each of ``names`` (order kept)."""
    return tuple(resolve_method(n) for n in names)


def parse_methods(text: str | None) -> tuple[str, ...]:
    """A comma-separated list of method names (aliases resolved); :data:`DEFAULT_METHODS` when empty or None."""
    if not text or not text.strip():
        return DEFAULT_METHODS
    return resolve_methods(n for n in text.split(",") if n.strip())


def get_method(name: str) -> Method:
    """The :class:`Method` called ``name`` (aliases accepted)."""
    return METHODS[resolve_method(name)]


def methods_help() -> str:
    """The method names in one line, for ``--help``."""
    base = [m.name for m in _ALL if not m.trained]
    trained = [m.name for m in _ALL if m.trained and not m.needs_describer]
    return (
        f"Baselines: {', '.join(base)}. Trained: {', '.join(trained)}; with a describer (genfilt.model): "
        f"{', '.join(NEEDS_DESCRIBER)}. Old names ({', '.join(ALIASES)}) still work."
    )
