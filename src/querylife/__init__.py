"""querylife: query-aware multimodal fusion and alignment for e-commerce search relevance (Query-LIFE)."""

__version__ = "0.1.0"
