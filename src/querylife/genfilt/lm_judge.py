"""GenFilt's yes / no judge on a local causal LM, from one forward pass per pair (no text generation).

Generating even one word costs a full ``generate`` call; on a CPU a small model writes about 5 tokens/s. The
question only needs the model's first answer token, so :class:`LogprobYesNo` runs one forward pass over the
prompt (chat template, generation prompt added) and reads the next-token distribution::

    score = log sum_{t in yes-like tokens} P(t) - log sum_{t in no-like tokens} P(t)
    answer = score >= threshold      (True: the product is what the query asks for -> masked)

"yes-like" tokens are the single-token spellings of yes / Yes / YES (with and without a leading space) in the
model's vocabulary; "no-like" the same for no.

Cost. Every prompt starts with the same text (chat header, system prompt, the user template up to the first
question field: about half of SmolLM2's tokens). That shared prefix runs through the model once; its key / value
cache is copied to each batch and only the pair-specific suffixes run, right-padded, with the attention mask
covering prefix + real suffix tokens, position ids continuing after the prefix, and the logits read at each
row's last real token (``logits_to_keep``: the vocabulary projection runs for those positions only). A prompt
whose tokens do not start with the prefix's tokens (a merge across the boundary) is scored whole, so the scores
are those of the full prompt either way (equal up to float rounding; a test checks 1e-4). Prompts are sorted by
token length before batching (less padding) and their scores returned in the callers' order.

It has the :class:`~querylife.genfilt.ask.YesNoClient` interface (``name``, ``ask_many``, ``stats``), so
:class:`~querylife.genfilt.judges.GenerativeJudge` uses it as it is: budget per batch, answer cache
(:class:`~querylife.genfilt.ask.AnswerCache`, keyed by ``name``, which includes the threshold).

Example::

    judge = LogprobYesNo.from_spec("smollm2-135m", threshold=0.0)
    judge.scores([("red dress", "dress: red floral midi", "dress", None)])  # array([1.7], dtype=float32)
    judge.ask_many([("red dress", "dress: blue", "dress", None)])          # [False]
"""

from __future__ import annotations

import copy
import inspect
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .ask import JudgePrompt
from .lm import LocalLM, load_causal_lm

__all__ = ["LogprobYesNo", "answer_token_ids"]

YES_WORDS = ("yes", "Yes", "YES")
NO_WORDS = ("no", "No", "NO")

Question = tuple[str, str, str, "str | None"]  # (query, product text, product type, image path: ignored)
# Fills every question field to find where the first one starts in a rendered prompt.
_FIELD = "QUERYLIFEFIELD"


@dataclass
class SharedPrefix:
    """The token ids every prompt starts with and the model's key / value cache over them (batch 1)."""

    ids: list[int]
    cache: Any  # a transformers Cache (DynamicCache for decoder-only LMs), never updated in place


def _cache_kwarg(model: Any) -> str:
    # transformers 5.24 renamed forward's past_key_values to cache (the old name warns until 5.40)
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> list[int]:
    n = 0
    for x, y in zip(a, b, strict=False):  # stops at the shorter
        if x != y:
            break
        n += 1
    return list(a[:n])


def _padded(rows: Sequence[Sequence[int]], pad: int, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows -> (ids, attention mask), each (n, longest row), padded on the left or on the right."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (n, L)
    attn = torch.zeros((len(rows), width), dtype=torch.long)  # (n, L)
    for k, r in enumerate(rows):
        span = slice(width - len(r), width) if left else slice(0, len(r))
        ids[k, span] = torch.tensor(r, dtype=torch.long)
        attn[k, span] = 1
    return ids, attn


def answer_token_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """Ids of the single-token spellings of ``words`` (bare and with a leading space); multi-token ones are
    skipped, since only the first answer token is read.

    Raises ValueError when none of them is a single token (the judge would have nothing to read).
    """
    ids: set[int] = set()
    for word in words:
        for text in (word, f" {word}"):
            enc = tokenizer.encode(text, add_special_tokens=False)
            if len(enc) == 1 and enc[0] != tokenizer.unk_token_id:
                ids.add(int(enc[0]))
    if not ids:
        raise ValueError(f"none of {list(words)} is a single token of this tokenizer: it cannot answer yes / no")
    return sorted(ids)


class LogprobYesNo:
    """A yes / no judge that reads a local causal LM's next-token distribution (see the module docstring).

    Args:
        lm: a loaded model (:func:`~querylife.genfilt.lm.load_causal_lm`).
        prompt: the question (system + user template); its ``version`` keys the answer cache.
        threshold: answer yes when ``log P(yes) - log P(no) >= threshold``; 0 = whichever is likelier. A higher
            threshold masks fewer pairs (more precise, less recall).
        batch_size: prompts per forward pass.
        prefix_cache: run the prompts' shared prefix once and reuse its key / value cache (see the module
            docstring; same scores, fewer tokens per pair). False runs every prompt whole.

    ``stats`` counts ``asked``, ``yes``, ``no``; ``last_scores`` holds the scores of the last ``ask_many`` call;
    ``prompts_whole`` counts the prompts scored without the prefix cache although it was on (boundary merges).
    """

    def __init__(
        self,
        lm: LocalLM,
        prompt: JudgePrompt | None = None,
        *,
        threshold: float = 0.0,
        batch_size: int = 16,
        prefix_cache: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lm = lm
        self.prompt = prompt or JudgePrompt()
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)
        self.prefix_cache = bool(prefix_cache)
        self._prefix: SharedPrefix | None = None
        self._prefix_built = False
        self.prompts_whole = 0
        tok = lm.tokenizer
        self.yes_ids = torch.tensor(answer_token_ids(tok, YES_WORDS))
        self.no_ids = torch.tensor(answer_token_ids(tok, NO_WORDS))
        self.chat_template = getattr(tok, "chat_template", None)
        self.stats: Counter[str] = Counter()
        self.last_scores: np.ndarray = np.zeros(0, dtype=np.float32)

    @classmethod
    def from_spec(
        cls,
        spec: str,
        prompt: JudgePrompt | None = None,
        *,
        threshold: float = 0.0,
        batch_size: int = 16,
        prefix_cache: bool = True,
        cache_dir: str | Path | None = None,
        device: str = "cpu",
        log: Any = None,
    ) -> LogprobYesNo:
        """Load the model of a spec (packaged name, ``.gguf`` file or HF folder) and wrap it."""
        lm = load_causal_lm(spec, cache_dir=cache_dir, device=device, log=log)
        return cls(lm, prompt, threshold=threshold, batch_size=batch_size, prefix_cache=prefix_cache)

    @property
    def name(self) -> str:
        return f"logprob:{self.lm.name}:t{self.threshold:g}"

    def render(self, query: str, product: str, product_type: str = "") -> str:
        """The full prompt of one question, up to where the answer's first token goes."""
        user = self.prompt.render(query, product, product_type)
        if not self.chat_template:
            system = f"{self.prompt.system}\n\n" if self.prompt.system else ""
            return f"{system}{user}\nAnswer:"
        messages = [{"role": "system", "content": self.prompt.system}] if self.prompt.system else []
        messages.append({"role": "user", "content": user})
        return self.lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        special = not self.chat_template  # a chat template already wrote BOS and friends
        return [list(ids) for ids in self.lm.tokenizer(texts, add_special_tokens=special)["input_ids"]]

    @torch.inference_mode()
    def shared_prefix(self) -> SharedPrefix | None:
        """The prompts' shared prefix and its key / value cache, computed on first use; None when the prefix cache
        is off, the template has no fixed leading text, or the model returns no cache."""
        if self._prefix_built:
            return self._prefix
        self._prefix_built = True
        if not self.prefix_cache:
            return None
        text = self.render(_FIELD, _FIELD, _FIELD)
        cut = text.find(_FIELD)
        if cut <= 0:
            return None
        # Tokens of the fixed text alone, kept only as far as they agree with a filled prompt's: the last token of
        # the fixed text can merge with what follows it (a trailing space, say), and must then run with the suffix.
        alone, filled = self._encode([text[:cut], text])
        ids = _common_prefix(alone, filled)
        if not ids:
            return None
        model = self.lm.model
        device = next(model.parameters()).device
        out = model(input_ids=torch.tensor([ids], device=device), use_cache=True, logits_to_keep=1)
        cache = getattr(out, "cache", None)  # transformers >= 5.24; earlier releases: past_key_values
        if cache is None:
            cache = getattr(out, "past_key_values", None)
        if cache is None or not hasattr(cache, "batch_repeat_interleave"):
            return None
        self._prefix = SharedPrefix(ids, cache)
        return self._prefix

    def _verdict_scores(self, last_logits: torch.Tensor) -> np.ndarray:
        logp = torch.log_softmax(last_logits.float(), dim=-1)  # (n, V)
        yes = torch.logsumexp(logp[:, self.yes_ids.to(logp.device)], dim=-1)  # (n,)
        no = torch.logsumexp(logp[:, self.no_ids.to(logp.device)], dim=-1)  # (n,)
        return (yes - no).cpu().numpy().astype(np.float32)

    @torch.inference_mode()
    def _forward(self, rows: list[list[int]], prefix: SharedPrefix | None = None) -> np.ndarray:
        """Scores of one batch of tokenised prompts; with ``prefix``, every row starts with ``prefix.ids`` and only
        the rest runs, over a copy of the prefix's cache."""
        model = self.lm.model
        device = next(model.parameters()).device
        pad = int(self.lm.tokenizer.pad_token_id)
        n = len(rows)
        if prefix is None:  # whole prompts, left-padded: every row's last token is the last column
            ids, attn = _padded(rows, pad, left=True)  # (n, L) each
            positions = (attn.cumsum(-1) - 1).clamp(min=0)  # (n, L): padding does not shift a prompt's positions
            logits = model(
                input_ids=ids.to(device), attention_mask=attn.to(device), position_ids=positions.to(device),
                logits_to_keep=1,
            ).logits[:, -1, :]  # (n, V)
            return self._verdict_scores(logits)
        start = len(prefix.ids)
        lengths = [len(r) - start for r in rows]
        width = max(lengths)
        ids, suffix_attn = _padded([r[start:] for r in rows], pad, left=False)  # (n, S) each: suffixes, right-padded
        attn = torch.cat([torch.ones((n, start), dtype=torch.long), suffix_attn], dim=1)  # (n, P + S)
        positions = (start + torch.arange(width)).expand(n, width)  # (n, S): continue after the prefix
        last = torch.tensor(lengths) - 1  # (n,): each row's last real suffix token
        keep = torch.unique(last)  # (m,) sorted: the only positions whose logits are read
        cache = copy.deepcopy(prefix.cache)  # the forward appends to it: the prefix's own cache stays as it is
        cache.batch_repeat_interleave(n)  # (1, H, P, D) -> (n, H, P, D) per layer
        logits = model(
            input_ids=ids.to(device), attention_mask=attn.to(device), position_ids=positions.to(device),
            use_cache=True, logits_to_keep=keep.to(device), **{_cache_kwarg(model): cache},
        ).logits  # (n, m, V)
        column = torch.searchsorted(keep, last)  # (n,): where each row's last token sits among the kept positions
        return self._verdict_scores(logits[torch.arange(n), column.to(logits.device)])  # (n, V) -> (n,)

    def scores(self, questions: Sequence[Question]) -> np.ndarray:
        """``log P(yes) - log P(no)`` per question, (N,) float32, in order."""
        out = np.zeros(len(questions), dtype=np.float32)
        if not questions:
            return out
        rows = self._encode([self.render(q, text, ptype) for q, text, ptype, *_ in questions])
        prefix = self.shared_prefix()
        cached: list[int] = []
        whole: list[int] = []
        for k, r in enumerate(rows):
            # a suffix of at least one token, and the prefix's exact tokens (no merge across the boundary)
            if prefix is not None and len(r) > len(prefix.ids) and r[: len(prefix.ids)] == prefix.ids:
                cached.append(k)
            else:
                whole.append(k)
        if prefix is not None:
            self.prompts_whole += len(whole)
        for group, pre in ((cached, prefix), (whole, None)):
            order = sorted(group, key=lambda k: len(rows[k]))  # similar lengths together: less padding
            for begin in range(0, len(order), self.batch_size):
                chunk = order[begin : begin + self.batch_size]
                out[chunk] = self._forward([rows[k] for k in chunk], pre)
        return out

    def ask_many(self, questions: Sequence[Question]) -> list[bool | None]:
        """One answer per ``(query, product_text, product_type, image_path)``: True when the score reaches the
        threshold. Images are ignored (a text-only model)."""
        if not questions:
            return []
        self.last_scores = self.scores(questions)
        answers = [bool(s >= self.threshold) for s in self.last_scores]
        self.stats["asked"] += len(answers)
        self.stats["yes"] += sum(answers)
        self.stats["no"] += len(answers) - sum(answers)
        return list(answers)

    def ask(self, query: str, product_text: str, product_type: str = "", image_path: str | None = None) -> bool:
        return bool(self.ask_many([(query, product_text, product_type, image_path)])[0])

    def __call__(self, query: str, product_text: str) -> bool:
        return self.ask(query, product_text)

    def __repr__(self) -> str:
        return f"LogprobYesNo({self.lm.name!r}, threshold={self.threshold:g})"
