"""Request and response bodies of the HTTP service (validated by pydantic; shown at /docs and /openapi.json).

Unknown fields are refused (422), so a client that sends ``image_path`` or ``image_url`` hoping the service reads
a file or fetches a URL learns at once that it never does: images travel only as base64 bytes. The bounds here are
absolute; the configured, usually tighter, limits (:class:`~querylife.serve.config.ServeConfig`) are checked by
the app with the same 422 shape.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "EmbedItem",
    "EmbedRequest",
    "EmbedResponse",
    "InlineProduct",
    "RelevanceRequest",
    "RelevanceResponse",
    "RelevanceResult",
    "SearchHit",
    "SearchRequest",
    "SearchResponse",
]

_HARD_LIST = 100_000  # absolute bound on any list; the configured limits are far below
_HARD_TEXT = 100_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InlineProduct(_Strict):
    """A product not in the store, encoded on the fly: its text (what the title tower reads: the title, or the
    configured text fields joined with `` | ``), type and optional image as base64-encoded bytes (JPEG, PNG, WebP...).
    """

    product_id: str | None = Field(default=None, max_length=1000, description="Echoed back; optional.")
    title: str = Field(min_length=1, max_length=_HARD_TEXT)
    product_type: str = Field(default="", max_length=1000, description="Unseen types use the gate's unknown type.")
    image_base64: str | None = Field(default=None, description="The image file's bytes, base64 (standard alphabet).")


class RelevanceRequest(_Strict):
    """One query and its candidates: ``product_ids`` from the store, or ``products`` inline (exactly one)."""

    query: str = Field(min_length=1, max_length=_HARD_TEXT)
    product_ids: list[str] | None = Field(default=None, max_length=_HARD_LIST)
    products: list[InlineProduct] | None = Field(default=None, max_length=_HARD_LIST)
    unknown_ids: Literal["error", "skip"] = Field(
        default="error",
        description="error: 404 naming every id not in the store; skip: score the others and list the unknown.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> RelevanceRequest:
        if (self.product_ids is None) == (self.products is None):
            raise ValueError("give exactly one of product_ids (stored products) or products (inline)")
        return self


class RelevanceResult(_Strict):
    product_id: str | None
    score: float = Field(description="The model's relevance score: the fused score minus its query's offset times the "
                         "strength chosen on dev (/readyz: query_offset_strength; 0 = the fused score). Higher is "
                         "more relevant; compare across queries through `probability`.")
    probability: float | None = Field(description="Calibrated P(relevant); null without calibrator.json.")
    relevant: bool | None = Field(description="probability >= the dev-fitted threshold; null without calibrator.")
    image_weight: float | None = Field(description="The query-aware gate's weight on the image (null for concat).")


class RelevanceResponse(_Strict):
    query: str
    results: list[RelevanceResult] = Field(description="One per known candidate, in the order sent.")
    unknown_product_ids: list[str] = Field(default_factory=list)
    threshold: float | None = Field(description="The calibrated decision threshold on probability.")
    model: str = Field(description="SHA-256 prefix of the checkpoint weights that scored.")


class SearchRequest(_Strict):
    query: str = Field(min_length=1, max_length=_HARD_TEXT)
    k: int = Field(default=10, ge=1, le=_HARD_LIST)
    candidates: int | None = Field(
        default=None, ge=1, le=_HARD_LIST, description="Index shortlist re-scored by the gate (default: the library's)."
    )


class SearchHit(_Strict):
    product_id: str
    title: str
    product_type: str
    score: float
    probability: float | None
    relevant: bool | None
    image_weight: float | None


class SearchResponse(_Strict):
    query: str
    hits: list[SearchHit]
    threshold: float | None
    model: str


class EmbedRequest(_Strict):
    """Query texts or products (stored ids or inline): exactly one of the three."""

    queries: list[str] | None = Field(default=None, max_length=_HARD_LIST)
    product_ids: list[str] | None = Field(default=None, max_length=_HARD_LIST)
    products: list[InlineProduct] | None = Field(default=None, max_length=_HARD_LIST)

    @model_validator(mode="after")
    def _one_kind(self) -> EmbedRequest:
        given = [self.queries is not None, self.product_ids is not None, self.products is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of queries, product_ids or products")
        return self


class EmbedItem(_Strict):
    id: str | None = Field(description="The query text, or the product id.")
    vector: list[float] = Field(description="Query: q. Product: the index vector an ANN index searches with q.")
    title_vector: list[float] | None = None
    image_vector: list[float] | None = None
    has_image: bool | None = None


class EmbedResponse(_Strict):
    kind: Literal["query", "product"]
    dim: int
    items: list[EmbedItem]
    model: str
