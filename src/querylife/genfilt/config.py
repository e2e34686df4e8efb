"""GenFilt's settings: stage 1 (describing products and queries) and stage 2 (judging in-batch negatives).

The ``genfilt`` section of :class:`querylife.config.ExperimentConfig`; unknown keys are errors.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .ask import JudgePrompt
from .base import PromptTemplate

QUERY_PROMPT = PromptTemplate(
    version="q1",
    system=(
        "You describe what e-commerce shoppers are looking for. Say the product type and every attribute the "
        "query asks for, in plain lower-case words. Never add an attribute the query does not ask for. Answer with "
        "the description only."
    ),
    user="Search query: {title}\nWhat is the shopper looking for? A short comma-separated list: type, then attributes.",
    max_tokens=48,
)


class GenFiltConfig(BaseModel):
    """GenFilt stage 1 (describing products) and stage 2 (judging in-batch negatives)."""

    model_config = ConfigDict(extra="forbid")
    # openai: an OpenAI-compatible server; hf: a local HF model (text or vision); local: a local causal LM given as
    # a HF folder, a .gguf file or a packaged name (smollm2-135m; the genfilt-local extra), text only.
    describer: Literal["openai", "hf", "local"] = "openai"
    base_url: str = "http://127.0.0.1:8000/v1"  # any OpenAI-compatible server: vLLM, Ollama, llama.cpp, hosted
    model: str = ""  # the server's model name; a local HF directory / hub id (hf); a folder, .gguf or name (local)
    hf_kind: Literal["text", "vision"] = "text"
    max_concurrency: int = 4
    timeout_s: float = 30.0
    max_retries: int = 3
    batch_size: int = 16
    cache: str = "genfilt_descriptions.jsonl"  # append-only JSONL; safe to resume after a kill
    prompt: PromptTemplate = Field(default_factory=PromptTemplate)  # versioned: bump prompt.version on edits
    # `genfilt describe --queries`: the intent of each query, for the similarity judge's query anchor. In this
    # template {title} is the query text and {product_type} is empty.
    query_prompt: PromptTemplate = Field(default_factory=lambda: QUERY_PROMPT.model_copy())
    guide_model: str = "minilm"  # text encoder for the similarity judges
    margin: float = 0.0  # mask a negative whose similarity reaches the positive's minus this margin
    margin_kind: Literal["absolute", "relative"] = "absolute"
    # Generative judge (train.false_negative_judge=generative, `querylife genfilt judge --judge generative`): the
    # similarity judge with this looser margin picks the suspicious pairs, the model answers yes / no for them.
    prefilter_margin: float = 0.1
    max_questions_per_batch: int = 32  # new questions per batch (bounded cost); cached answers are free
    answers: str = "genfilt_answers.jsonl"  # append-only cache of yes / no answers, keyed like descriptions
    judge_prompt: JudgePrompt = Field(default_factory=JudgePrompt)  # versioned like the description prompt
    # The yes / no model. "" = ask the describer (it generates a word, parsed as yes / no); otherwise a local causal
    # LM (HF folder, .gguf file or smollm2-135m) answering from one forward pass: log P(yes) - log P(no).
    judge_model: str = ""
    judge_threshold: float = 0.0  # judge_model: yes (mask) when log P(yes) - log P(no) >= this; higher = fewer masks
    judge_batch_size: int = Field(16, ge=1)  # judge_model: prompts per forward pass
    # judge_model: run the prompts' shared prefix (system prompt, template up to the query) once and reuse its
    # key / value cache; the same scores (to float rounding) for fewer tokens per pair. false = whole prompts.
    judge_prefix_cache: bool = True
    # Which judge picks the suspicious pairs: the description similarity judge (needs genfilt.cache) or the guide
    # on raw titles (no descriptions needed; the model is then shown titles).
    generative_prefilter: Literal["descriptions", "guide"] = "descriptions"
    lm_cache_dir: str = ""  # where .gguf models are converted to safetensors once; "" = ~/.cache/querylife/lm
