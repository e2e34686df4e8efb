"""A GenFilt describer that runs a local Hugging Face model: a text LLM or a vision-language model.

Where :class:`~querylife.genfilt.openai_client.OpenAIDescriber` talks to a server, :class:`HFDescriber` loads
the model in-process (a local directory or a hub id, through ``from_pretrained``): nothing to start, and the
same code on a laptop CPU (a small model) and on a GPU.

Two kinds:

* ``kind="text"``: ``AutoModelForCausalLM`` + ``AutoTokenizer``. The prompt goes through the tokenizer's chat
  template when it has one, else it is sent as plain text (system, blank line, user).
* ``kind="vision"``: ``AutoProcessor`` + ``AutoModelForImageTextToText`` (``AutoModelForVision2Seq`` on older
  transformers). Chat-style models (the processor or its tokenizer has a chat template: LLaVA, Qwen2-VL,
  SmolVLM, Idefics...) get ``[image, text]`` user content; captioning models without a template (BLIP, GIT,
  PaliGemma...) get ``processor(images=..., text=prompt)``. A product without an image (or whose file is not
  there yet) gets a text-only prompt; a model that cannot run without an image answers ``DescribeError``.

Generation is greedy (the prompt's ``temperature`` is ignored) so that a description is a function of the
product and the cache stays valid; batched with left padding; only the new tokens are decoded.

Example::

    describer = HFDescriber("Qwen/Qwen2.5-0.5B-Instruct", device="auto", batch_size=16)
    describer.describe_batch([ProductInput("p1", "Floral midi dress", "dress")], PromptTemplate())
    vlm = HFDescriber("HuggingFaceTB/SmolVLM-256M-Instruct", kind="vision", device="cuda")
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from typing import Any, Literal

import torch

from .base import DescribeError, ProductInput, PromptTemplate, normalise_text

__all__ = ["HFDescriber"]

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> str | torch.dtype:
    if dtype is None:
        # float32 on CPU (half precision is slow or unsupported there); the checkpoint's own dtype on a GPU.
        return torch.float32 if device.type == "cpu" else "auto"
    if isinstance(dtype, str) and dtype != "auto":
        try:
            return getattr(torch, dtype)
        except AttributeError:
            raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16', 'float16' or 'auto'") from None
    return dtype


def _vision_auto_class() -> Any:
    import transformers

    for name in ("AutoModelForImageTextToText", "AutoModelForVision2Seq"):
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    raise RuntimeError(
        f"transformers {transformers.__version__} has neither AutoModelForImageTextToText nor "
        "AutoModelForVision2Seq: upgrade transformers for kind='vision'"
    )


def _auto_knows(auto_cls: Any, config: Any) -> bool:
    """Whether an Auto* model class maps this config (remote-code configs are given the benefit of the doubt)."""
    mapping = getattr(auto_cls, "_model_mapping", None)
    if mapping is None or getattr(config, "auto_map", None):
        return True
    return type(config) in mapping


class HFDescriber:
    """Describes products with a local Hugging Face model (implements the ``Describer`` protocol).

    Args:
        model: a local directory or a hub id (loaded with ``from_pretrained``; offline when ``HF_HUB_OFFLINE``).
        kind: ``"text"`` (a causal LM: title and type only) or ``"vision"`` (a vision-language model that also
            sees the product photo).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, or ``"auto"`` (a GPU when there is one).
        batch_size: products per ``generate`` call. Prompts are sorted by length first, so padding stays small.
        max_new_tokens: upper bound on generated tokens; the prompt's ``max_tokens`` applies when smaller.
        dtype: torch dtype or its name; None = float32 on CPU, the checkpoint's dtype on a GPU.
        max_chars: descriptions are whitespace-normalised and cut to this length.
        trust_remote_code: passed to ``from_pretrained`` (off by default: never run code from a checkpoint).
        name: the describer's name in cache keys (default ``hf:{model}:{kind}``); e.g. a model converted into a
            cache folder keeps the name it was asked for.

    ``name`` (part of the description cache key) is ``hf:{model}:{kind}``; bump the prompt version when you
    change generation settings, as for any describer.

    Raises:
        ValueError: ``kind="vision"`` with a checkpoint that is not a vision-language model (or the reverse).
    """

    def __init__(
        self,
        model: str,
        *,
        kind: Literal["text", "vision"] = "text",
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        max_new_tokens: int = 48,
        dtype: str | torch.dtype | None = None,
        max_chars: int = 500,
        trust_remote_code: bool = False,
        name: str = "",
    ):
        if kind not in ("text", "vision"):
            raise ValueError(f"kind must be 'text' or 'vision', got {kind!r}")
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError("batch_size and max_new_tokens must be >= 1")
        self.model_name = str(model)
        self._name = name
        self.kind = kind
        self.device = _resolve_device(device)
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.max_chars = int(max_chars)
        self._remote: dict[str, Any] = {"trust_remote_code": True} if trust_remote_code else {}
        load_kwargs: dict[str, Any] = {"dtype": _resolve_dtype(dtype, self.device), **self._remote}
        self.processor: Any = None
        if kind == "text":
            self._load_text(load_kwargs)
        else:
            self._load_vision(load_kwargs)
        self.model.to(self.device).eval()
        self._greedy_config()
        # Captioning models without a chat template (BLIP...) take the prompt as a caption prefix and mishandle
        # padded prompts (BLIP overwrites the first position with BOS): batch only prompts of equal length.
        self.pad_free = kind == "vision" and not self.chat_template
        self.is_encoder_decoder = bool(getattr(self.model.config, "is_encoder_decoder", False))
        self.stats = {"generated": 0, "text_only": 0, "errors": 0}

    @property
    def name(self) -> str:
        return self._name or self.name_for(self.model_name, self.kind)

    @staticmethod
    def name_for(model: str, kind: str) -> str:
        """An HF describer's cache name, without loading it: ``name_for("/m/smol", "text") == "hf:/m/smol:text"``."""
        return f"hf:{model}:{kind}"

    # ---- loading -------------------------------------------------------------------------------------------
    def _load_text(self, load_kwargs: dict[str, Any]) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        config = AutoConfig.from_pretrained(self.model_name, **self._remote)
        if not _auto_knows(AutoModelForCausalLM, config):
            raise ValueError(
                f"{self.model_name} ({config.model_type}) is not a causal language model; "
                "for a vision-language model use kind='vision'"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_name, **self._remote)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_name, **load_kwargs)
        self.chat_template = getattr(self.tokenizer, "chat_template", None)
        self._prepare_tokenizer(self.tokenizer)

    def _load_vision(self, load_kwargs: dict[str, Any]) -> None:
        from transformers import AutoConfig, AutoProcessor

        config = AutoConfig.from_pretrained(self.model_name, **self._remote)
        auto_cls = _vision_auto_class()
        if not _auto_knows(auto_cls, config):
            raise ValueError(
                f"{self.model_name} ({config.model_type}) is not a vision-language / image-to-text model that "
                f"{auto_cls.__name__} can load; use kind='text' for a text-only LLM"
            )
        processor = AutoProcessor.from_pretrained(self.model_name, **self._remote)
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None or getattr(processor, "image_processor", None) is None:
            raise ValueError(
                f"{self.model_name}: AutoProcessor gave {type(processor).__name__}, not a processor with a tokenizer "
                "and an image processor; save one with the checkpoint (processor.save_pretrained)"
            )
        self.processor = processor
        self.tokenizer = tokenizer
        self.model = auto_cls.from_pretrained(self.model_name, **load_kwargs)
        self.chat_template = getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None)
        self._prepare_tokenizer(tokenizer)

    @staticmethod
    def _prepare_tokenizer(tokenizer: Any) -> None:
        # Decoder-only generation continues from the last position: pad on the left so every prompt ends there.
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            fallback = tokenizer.eos_token or tokenizer.unk_token
            if fallback is None:
                raise ValueError("the tokenizer has no pad, eos or unk token to pad batches with")
            tokenizer.pad_token = fallback

    # ---- prompts -------------------------------------------------------------------------------------------
    def _messages(self, item: ProductInput, prompt: PromptTemplate, with_image: bool) -> list[dict[str, Any]]:
        user = prompt.render(item)
        if self.kind == "text":
            messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
            return [*messages, {"role": "user", "content": user}]
        # Processors of vision chat models expect content as a list of typed parts.
        parts: list[dict[str, Any]] = [{"type": "image"}] if with_image else []
        parts.append({"type": "text", "text": user})
        messages = [{"role": "system", "content": [{"type": "text", "text": prompt.system}]}] if prompt.system else []
        return [*messages, {"role": "user", "content": parts}]

    def _render(self, item: ProductInput, prompt: PromptTemplate, with_image: bool) -> str:
        """The full prompt text (chat template applied when there is one)."""
        if not self.chat_template:
            system = f"{prompt.system}\n\n" if prompt.system else ""
            return f"{system}{prompt.render(item)}\n"
        owner = self.processor if self.kind == "vision" and getattr(self.processor, "chat_template", None) else None
        owner = owner or self.tokenizer
        messages = self._messages(item, prompt, with_image)
        try:
            return owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # some templates (Gemma, Mistral) reject a system turn: fold it into the user turn
            if not prompt.system:
                raise
            merged = self._messages(item, prompt.model_copy(update={"system": ""}), with_image)
            user = merged[-1]
            if isinstance(user["content"], str):
                user["content"] = f"{prompt.system}\n\n{user['content']}"
            else:
                user["content"][-1]["text"] = f"{prompt.system}\n\n{user['content'][-1]['text']}"
            return owner.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)

    # ---- images --------------------------------------------------------------------------------------------
    def _image(self, item: ProductInput) -> Any:
        """The product photo as an RGB PIL image, None when there is none, or a DescribeError."""
        path = item.image_path
        if not path:
            return None
        if "://" in path:
            return DescribeError("bad_image", f"{item.product_id}: HFDescriber reads local files only, not {path}")
        if not os.path.isfile(path):
            # Not there (yet): the content hash marks it missing, so it is described again once it appears.
            return None
        from PIL import Image

        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except Exception as e:  # PIL raises several types for truncated / unknown files
            return DescribeError("bad_image", f"{item.product_id}: cannot read image {path}: {e}")

    # ---- generation ----------------------------------------------------------------------------------------
    def _greedy_config(self) -> None:
        """Make the model's own generation config greedy, once (so ``generate`` gets no conflicting arguments)."""
        gc = copy.deepcopy(self.model.generation_config)
        gc.do_sample = False
        gc.num_beams = 1
        # Sampling settings from the checkpoint would only trigger warnings under greedy decoding.
        for key in ("temperature", "top_p", "top_k", "min_p", "typical_p"):
            if getattr(gc, key, None) is not None:
                setattr(gc, key, None)
        gc.pad_token_id = self.tokenizer.pad_token_id
        if gc.eos_token_id is None:
            gc.eos_token_id = self.tokenizer.eos_token_id
        self.model.generation_config = gc

    def _encode(self, texts: list[str], images: list[Any] | None) -> dict[str, torch.Tensor]:
        # A chat template already wrote the special tokens (BOS...); plain prompts get the tokenizer's own.
        special = not self.chat_template
        if self.kind == "text":
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=special)
        elif images is None:
            enc = self.processor(text=texts, return_tensors="pt", padding=True)
        else:
            enc = self.processor(text=texts, images=images, return_tensors="pt", padding=True)
        dtype = self.model.dtype
        return {
            k: (v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device))
            for k, v in dict(enc).items()
            if torch.is_tensor(v)
        }

    def _new_tokens(self, out: torch.Tensor, input_ids: torch.Tensor | None) -> torch.Tensor:
        """The generated part of ``generate``'s output.

        Decoder-only models echo the prompt first (length n). BLIP-style captioners echo it with the first token
        replaced by BOS and the last one ([SEP]) dropped (length n - 1). Encoder-decoders return new tokens only.
        """
        if self.is_encoder_decoder or input_ids is None:
            return out
        n = input_ids.shape[1]
        ids, out_cpu = input_ids.cpu(), out.cpu()
        if out.shape[1] >= n and torch.equal(out_cpu[:, :n], ids):
            return out[:, n:]
        if n >= 2 and out.shape[1] >= n - 1 and torch.equal(out_cpu[:, 1 : n - 1], ids[:, 1 : n - 1]):
            return out[:, n - 1 :]
        return out

    @torch.inference_mode()
    def _generate(self, texts: list[str], images: list[Any] | None, max_new_tokens: int) -> list[str]:
        enc = self._encode(texts, images)
        out = self.model.generate(**enc, max_new_tokens=max_new_tokens)
        new = self._new_tokens(out, enc.get("input_ids"))
        decoded = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [normalise_text(_THINK.sub(" ", d), self.max_chars) for d in decoded]

    def describe_batch(self, items: Sequence[ProductInput], prompt: PromptTemplate) -> list[str | DescribeError]:
        """One description (or a ``DescribeError``) per item, in order.

        Per-product failures (an unreadable image, an empty answer, a captioning model without an image) come
        back as errors; a failure of the model itself (out of memory, a bad checkpoint) raises.
        """
        results: list[str | DescribeError | None] = [None] * len(items)
        max_new = min(self.max_new_tokens, int(prompt.max_tokens or self.max_new_tokens))
        groups: dict[tuple[bool, int], list[tuple[int, str, Any]]] = {}
        for i, item in enumerate(items):
            image = self._image(item) if self.kind == "vision" else None
            if isinstance(image, DescribeError):
                results[i] = image
                continue
            with_image = image is not None
            if self.kind == "vision" and not with_image:
                self.stats["text_only"] += 1
            text = self._render(item, prompt, with_image)
            # Text-only and image prompts go to separate generate calls (processors want one or the other).
            length = len(self.tokenizer(text)["input_ids"]) if self.pad_free else 0
            groups.setdefault((with_image, length), []).append((i, text, image))
        for (with_image, _), jobs in groups.items():
            # Similar lengths together: less padding. Results go back by index, so the order does not leak out.
            jobs.sort(key=lambda job: len(job[1]))
            for start in range(0, len(jobs), self.batch_size):
                chunk = jobs[start : start + self.batch_size]
                texts = [text for _, text, _ in chunk]
                imgs = [img for _, _, img in chunk] if with_image else None
                try:
                    outputs: list[str | DescribeError] = list(self._generate(texts, imgs, max_new))
                except (ValueError, TypeError) as e:
                    if with_image or self.kind == "text":
                        raise
                    # A captioning model (BLIP...) cannot run without pixels: that product fails, not the run.
                    outputs = [DescribeError("no_image", f"{self.model_name} needs an image: {e}")] * len(chunk)
                for (i, _, _), text in zip(chunk, outputs, strict=True):
                    if isinstance(text, str) and not text:
                        text = DescribeError("empty", f"{items[i].product_id}: the model generated no text")
                    results[i] = text
        for r in results:
            if isinstance(r, DescribeError):
                self.stats["errors"] += 1
            else:
                self.stats["generated"] += 1
        return [r if r is not None else DescribeError("empty", "not generated") for r in results]

    def __repr__(self) -> str:
        return f"HFDescriber({self.model_name!r}, kind={self.kind!r}, device={str(self.device)!r})"
