"""GenFilt: generative descriptions of products, used to find in-batch false negatives.

Stage 1 (this package's describers, cache and :func:`describe_catalog`) turns each product into a canonical
description of what it is, offline and cached; stage 2 (:mod:`.judges`, :mod:`.ask`) embeds the descriptions
and masks suspected false negatives out of the contrastive loss, optionally asking a generative model yes / no
about the suspicious pairs (:class:`YesNoClient`, answers kept in an :class:`AnswerCache`).

Example::

    from querylife.genfilt import DescriptionCache, OpenAIDescriber, PromptTemplate, describe_catalog

    describer = OpenAIDescriber("http://127.0.0.1:8000/v1", "Qwen/Qwen2-VL-2B-Instruct")
    describer.check()
    summary = describe_catalog(items, describer, PromptTemplate(), DescriptionCache("descriptions.jsonl"))
    print(summary.to_text())

Nothing heavy (torch, transformers) is imported here: local-model describers live in their own modules.
"""

from .ask import AnswerCache, JudgePrompt, YesNoClient, parse_yes_no
from .base import DescribeError, Describer, ProductInput, PromptTemplate, content_hash
from .cache import CacheError, DescriptionCache
from .config import QUERY_PROMPT, GenFiltConfig
from .describe import DescribeSummary, describe_catalog, products_from_catalog
from .openai_client import OpenAIDescriber

__all__ = [
    "AnswerCache",
    "CacheError",
    "DescribeError",
    "DescribeSummary",
    "Describer",
    "DescriptionCache",
    "GenFiltConfig",
    "JudgePrompt",
    "OpenAIDescriber",
    "ProductInput",
    "PromptTemplate",
    "QUERY_PROMPT",
    "YesNoClient",
    "content_hash",
    "describe_catalog",
    "parse_yes_no",
    "products_from_catalog",
]
