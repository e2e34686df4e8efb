"""GenFilt: generative descriptions of products, used to find in-batch false negatives.

Stage 1 (this package's describers, cache and :func:`describe_catalog`) turns each product into a canonical
description of what it is, offline and cached; later stages embed the descriptions and mask suspected false
negatives out of the contrastive loss.

Example::

    from querylife.genfilt import DescriptionCache, OpenAIDescriber, PromptTemplate, describe_catalog

    describer = OpenAIDescriber("http://127.0.0.1:8000/v1", "Qwen/Qwen2-VL-2B-Instruct")
    describer.check()
    summary = describe_catalog(items, describer, PromptTemplate(), DescriptionCache("descriptions.jsonl"))
    print(summary.to_text())

Nothing heavy (torch, transformers) is imported here: local-model describers live in their own modules.
"""

from .base import DescribeError, Describer, ProductInput, PromptTemplate, content_hash
from .cache import CacheError, DescriptionCache
from .describe import DescribeSummary, describe_catalog, products_from_catalog
from .openai_client import OpenAIDescriber

__all__ = [
    "CacheError",
    "DescribeError",
    "DescribeSummary",
    "Describer",
    "DescriptionCache",
    "OpenAIDescriber",
    "ProductInput",
    "PromptTemplate",
    "content_hash",
    "describe_catalog",
    "products_from_catalog",
]
