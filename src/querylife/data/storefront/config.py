"""The demo storefront's knobs (:class:`DemoConfig`) and the paths of a generated one (:class:`DemoStorefront`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .registry import DEFAULT_STOREFRONT, storefront_spec
from .spec import StorefrontSpec

__all__ = ["DEFAULT_STOREFRONT", "DemoConfig", "DemoStorefront"]


@dataclass
class DemoConfig:
    """Knobs of the demo storefront. Every field is recorded in meta.json and decides cache reuse."""

    n_products: int = 3000  # listings in the catalogue, duplicates included
    seed: int = 0
    image_size: int = 64  # square RGB PNGs
    # Distinct queries; 0 means n_products // 5 (600 for the default catalogue).
    n_queries: int = 0
    # Labelled candidates per query, drawn uniformly from [min, max].
    min_candidates: int = 15
    max_candidates: int = 25
    # Share of a query's candidates taken from other product types (labelled irrelevant), drawn per query.
    irrelevant_share: tuple[float, float] = (0.25, 0.35)
    # Share of a query's candidates that match every attribute the query names (labelled exact), per query.
    exact_share: tuple[float, float] = (0.13, 0.28)
    # Share of items listed more than once (2-3 listings: other sellers, reworded titles, re-shot photos).
    duplicate_rate: float = 0.12
    # Among duplicated items, share listed three times rather than twice.
    triple_rate: float = 0.3
    # Chance that a clothing title names one of the item's true attributes (the image carries the rest).
    title_attribute_rate: float = 0.1
    # Chance that a clothing item's collection name holds an attribute word that does NOT describe it ("Blue
    # Lagoon" on a red dress), as real brand and collection names do: text matching is then misleading, not just
    # silent, for these types, and a model has to learn to trust the photo.
    title_decoy_rate: float = 0.3
    # Gaussian pixel noise, standard deviation range on the 0-255 scale, drawn per listing photo.
    noise_std: tuple[float, float] = (2.0, 7.0)
    # Which storefront (a name in .registry.STOREFRONTS): its product types, words, languages, missing photos.
    storefront: str = DEFAULT_STOREFRONT

    def __post_init__(self) -> None:
        # Tuples arrive as lists when a config is read back from JSON.
        self.irrelevant_share = tuple(self.irrelevant_share)  # type: ignore[assignment]
        self.exact_share = tuple(self.exact_share)  # type: ignore[assignment]
        self.noise_std = tuple(self.noise_std)  # type: ignore[assignment]
        n_types = len(self.spec.product_types)  # also refuses an unknown storefront
        if self.n_products < 8 * n_types:
            raise ValueError(f"n_products must be >= {8 * n_types}, got {self.n_products}")
        if not 16 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be in [16, 1024], got {self.image_size}")
        if self.n_queries < 0:
            raise ValueError(f"n_queries must be >= 0, got {self.n_queries}")
        if not 3 <= self.min_candidates <= self.max_candidates:
            raise ValueError("need 3 <= min_candidates <= max_candidates")
        for name in ("irrelevant_share", "exact_share", "noise_std"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi or (name != "noise_std" and hi >= 1):
                raise ValueError(f"{name} must be an increasing (low, high) pair in range, got {(lo, hi)}")
        for name in ("duplicate_rate", "triple_rate", "title_attribute_rate", "title_decoy_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    @property
    def effective_n_queries(self) -> int:
        return self.n_queries or max(8, self.n_products // 5)

    @property
    def spec(self) -> StorefrontSpec:
        """The storefront definition this config generates."""
        return storefront_spec(self.storefront)

    def to_json(self) -> dict[str, Any]:
        """The config as plain JSON types (tuples become lists), as stored in meta.json.

        The default storefront's name is left out, so the demo's meta.json (and cache key) is what it was before
        storefronts had names.
        """
        out = json.loads(json.dumps(asdict(self)))
        if out["storefront"] == DEFAULT_STOREFRONT:
            del out["storefront"]
        return out


@dataclass
class DemoStorefront:
    """Paths of a generated storefront (what :func:`~.generate.generate_demo` returns)."""

    out_dir: Path
    catalog_path: Path  # out_dir / "catalog.parquet"
    pairs_path: Path  # out_dir / "pairs.parquet"
    meta_path: Path  # out_dir / "meta.json"
    # Extra: one row per query with its product type and the attributes it names (for per-type evaluation).
    queries_path: Path | None = None

    @classmethod
    def at(cls, out_dir: str | Path) -> DemoStorefront:
        out = Path(out_dir)
        return cls(out, out / "catalog.parquet", out / "pairs.parquet", out / "meta.json", out / "queries.parquet")

    def meta(self) -> dict[str, Any]:
        return json.loads(self.meta_path.read_text())

    def type_groups(self) -> dict[str, list[str]]:
        """Product types grouped by the modality that carries most of their attributes (for reports):
        ``image-informative``, ``title-informative`` and, where the storefront has any, ``mixed``."""
        meta = self.meta()
        groups = {
            "image-informative": meta["image_informative_types"],
            "title-informative": meta["title_informative_types"],
        }
        if meta.get("mixed_types"):
            groups["mixed"] = meta["mixed_types"]
        return groups

    def config_overrides(self) -> dict[str, str]:
        """Config overrides that point an experiment at this storefront, split by intent: the storefront phrases
        one intent several ways, and a paraphrase of a test query in training would flatter every trained method.

        Example: ``with_overrides(config, store.config_overrides())``.
        """
        return {"data.catalog": str(self.catalog_path), "data.pairs": str(self.pairs_path), "data.split_by": "intent"}
