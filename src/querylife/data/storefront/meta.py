"""meta.json: what generated a storefront (generator, version, config: the cache key) and what is in it (counts,
label mix, duplicate statistics, how often titles leak drawn attributes)."""

from __future__ import annotations

from typing import Any

from .catalog import Listing
from .config import DEFAULT_STOREFRONT, DemoConfig
from .labels import LABELS
from .queries import Query
from .spec import StorefrontSpec
from .words import mentions

__all__ = ["GENERATOR_NAME", "GENERATOR_VERSION", "build_meta"]

# Bump whenever the output for a given config changes, so that cached storefronts are regenerated.
GENERATOR_VERSION = "5"
# Recorded in every meta.json and checked before reusing or replacing a directory. It is the module name the
# generator had when storefronts were first cached; keep it, or every cached storefront reads as foreign.
GENERATOR_NAME = "querylife.data.demo"


def build_meta(
    config: DemoConfig,
    spec: StorefrontSpec,
    listings: list[Listing],
    queries: list[Query],
    pairs: list[tuple[str, str, str]],
    attempts: int,
) -> dict[str, Any]:
    """The content of meta.json for a storefront made of these listings, queries and pairs."""
    label_counts = {lab: sum(1 for p in pairs if p[2] == lab) for lab in LABELS}
    group_sizes: dict[int, int] = {}
    for li in listings:
        group_sizes[li.group] = group_sizes.get(li.group, 0) + 1
    dup_groups = [g for g, n in group_sizes.items() if n > 1]
    pid_group = {li.product_id: li.group for li in listings}
    # Queries whose candidate list holds two listings of one item: where in-batch false negatives bite.
    per_query_groups: dict[str, list[int]] = {}
    for qtext, pid, _ in pairs:
        per_query_groups.setdefault(qtext, []).append(pid_group[pid])
    q_with_dup = sum(1 for gs in per_query_groups.values() if len(gs) != len(set(gs)))
    mention: dict[str, float] = {}
    for t in spec.image_informative_types:
        rows = [li for li in listings if li.product_type == t]
        drawn = spec.product_types[t].image_attributes
        mention[t] = round(
            sum(mentions(spec.in_language(li.language), li.title, [li.attributes[a] for a in drawn]) for li in rows)
            / len(rows),
            4,
        )
    n_pairs = max(1, len(pairs))
    meta = {
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "config": config.to_json(),
        "counts": {
            "products": len(listings),
            "groups": len(group_sizes),
            "queries": len(queries),
            "pairs": len(pairs),
            "images": sum(li.has_image for li in listings),
        },
        "files": {
            "catalog": "catalog.parquet",
            "pairs": "pairs.parquet",
            "queries": "queries.parquet",
            "images": "images/",
        },
        "product_types": {
            name: {
                "informative": tspec.informative,
                "attributes": {a: list(v) for a, v in tspec.attributes.items()},
                "image_attributes": list(tspec.image_attributes),
                "products": sum(1 for li in listings if li.product_type == name),
                "queries": sum(1 for q in queries if q.product_type == name),
            }
            for name, tspec in spec.product_types.items()
        },
        "image_informative_types": spec.image_informative_types,
        "title_informative_types": spec.title_informative_types,
        "label_counts": label_counts,
        "label_fractions": {k: round(v / n_pairs, 4) for k, v in label_counts.items()},
        "candidates_per_query": {
            "mean": round(len(pairs) / max(1, len(queries)), 2),
            "min": min((len(g) for g in per_query_groups.values()), default=0),
            "max": max((len(g) for g in per_query_groups.values()), default=0),
        },
        "query_attribute_counts": {
            str(k): sum(1 for q in queries if len(q.attributes) == k)
            for k in range(1 + max(len(s.attributes) for s in spec.product_types.values()))
        },
        "query_sampling_attempts": attempts,
        "title_attribute_mention_rate": mention,
        "duplicate_stats": {
            "groups_with_duplicates": len(dup_groups),
            "item_duplicate_rate": round(len(dup_groups) / len(group_sizes), 4),
            "listings_in_duplicate_groups": sum(group_sizes[g] for g in dup_groups),
            "listing_duplicate_rate": round(sum(group_sizes[g] for g in dup_groups) / len(listings), 4),
            "group_size_counts": {str(n): sum(1 for s in group_sizes.values() if s == n) for n in (1, 2, 3)},
            "queries_with_duplicate_candidates": q_with_dup,
        },
    }
    if spec.mixed_types:
        meta["mixed_types"] = spec.mixed_types
    if config.storefront != DEFAULT_STOREFRONT:  # the demo's meta.json stays as it was before storefronts had names
        meta["storefront"] = _storefront_meta(config.storefront, spec, listings, queries)
    return meta


def _storefront_meta(name: str, spec: StorefrontSpec, listings: list[Listing], queries: list[Query]) -> dict[str, Any]:
    """What a named storefront is made of: styles per type, languages, missing photos."""

    def count(values: list[str]) -> dict[str, int]:
        return {code: values.count(code) for code in spec.language_codes}

    return {
        "name": name,
        "description": spec.description,
        "types": {
            t: {"informative": s.informative, "title_style": s.title_kind, "image_style": s.image_style}
            for t, s in spec.product_types.items()
        },
        "mixed_types": spec.mixed_types,
        "shared_icon_types": spec.shared_icon_types,
        "missing_image_rate": spec.missing_image_rate,
        "listings_without_image": sum(not li.has_image for li in listings),
        "title_languages": count([li.language for li in listings]),
        "query_languages": count([q.language for q in queries]),
        "title_drop_rate": spec.title_drop_rate,
        "title_typo_rate": spec.title_typo_rate,
    }
