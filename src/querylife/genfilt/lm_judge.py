"""GenFilt's yes / no judge on a local causal LM, from one forward pass per pair (no text generation).

Generating even one word costs a full ``generate`` call; on a CPU a small model writes about 5 tokens/s. The
question only needs the model's first answer token, so :class:`LogprobYesNo` runs one forward pass over the
prompt (chat template, generation prompt added) and reads the next-token distribution::

    score = log sum_{t in yes-like tokens} P(t) - log sum_{t in no-like tokens} P(t)
    answer = score >= threshold      (True: the product is what the query asks for -> masked)

"yes-like" tokens are the single-token spellings of yes / Yes / YES (with and without a leading space) in the
model's vocabulary; "no-like" the same for no. Prompts are batched with left padding (position ids follow the
attention mask, so a padded prompt scores as it does alone) and sorted by length to keep padding small.

It has the :class:`~querylife.genfilt.ask.YesNoClient` interface (``name``, ``ask_many``, ``stats``), so
:class:`~querylife.genfilt.judges.GenerativeJudge` uses it as it is: budget per batch, answer cache
(:class:`~querylife.genfilt.ask.AnswerCache`, keyed by ``name``, which includes the threshold).

Example::

    judge = LogprobYesNo.from_spec("smollm2-135m", threshold=0.0)
    judge.scores([("red dress", "dress: red floral midi", "dress", None)])  # array([1.7], dtype=float32)
    judge.ask_many([("red dress", "dress: blue", "dress", None)])          # [False]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
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

    ``stats`` counts ``asked``, ``yes``, ``no``; ``last_scores`` holds the scores of the last ``ask_many`` call.
    """

    def __init__(self, lm: LocalLM, prompt: JudgePrompt | None = None, *, threshold: float = 0.0, batch_size: int = 16):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lm = lm
        self.prompt = prompt or JudgePrompt()
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)
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
        cache_dir: str | Path | None = None,
        device: str = "cpu",
        log: Any = None,
    ) -> LogprobYesNo:
        """Load the model of a spec (packaged name, ``.gguf`` file or HF folder) and wrap it."""
        lm = load_causal_lm(spec, cache_dir=cache_dir, device=device, log=log)
        return cls(lm, prompt, threshold=threshold, batch_size=batch_size)

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

    @torch.inference_mode()
    def _score_texts(self, texts: list[str]) -> np.ndarray:
        tok, model = self.lm.tokenizer, self.lm.model
        device = next(model.parameters()).device
        special = not self.chat_template  # a chat template already wrote BOS and friends
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=special)
        ids = enc["input_ids"].to(device)  # (n, L), left-padded
        attn = enc["attention_mask"].to(device)  # (n, L)
        positions = (attn.cumsum(-1) - 1).clamp(min=0)  # (n, L): padding does not shift a prompt's positions
        logits = model(input_ids=ids, attention_mask=attn, position_ids=positions).logits[:, -1, :]  # (n, V)
        logp = torch.log_softmax(logits.float(), dim=-1)  # (n, V)
        yes = torch.logsumexp(logp[:, self.yes_ids.to(device)], dim=-1)  # (n,)
        no = torch.logsumexp(logp[:, self.no_ids.to(device)], dim=-1)  # (n,)
        return (yes - no).cpu().numpy().astype(np.float32)

    def scores(self, questions: Sequence[Question]) -> np.ndarray:
        """``log P(yes) - log P(no)`` per question, (N,) float32, in order."""
        texts = [self.render(q, text, ptype) for q, text, ptype, *_ in questions]
        out = np.zeros(len(texts), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda k: len(texts[k]))  # similar lengths together: less padding
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            out[chunk] = self._score_texts([texts[k] for k in chunk])
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
