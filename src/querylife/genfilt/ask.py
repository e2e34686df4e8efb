"""GenFilt's generative judge: ask a generative model "does this product match this query?" (yes / no).

The question goes through any :class:`~querylife.genfilt.base.Describer` (an OpenAI-compatible server, a local
HF model), so the judge gets the describers' concurrency bound, timeouts, retries and error reasons for free:
the rendered question travels as the "title" of a one-off :class:`ProductInput` under a prompt whose user text
is just ``{title}``. The product photo goes along when the describer sends images (a vision-language model can
then check what the title does not say).

Answers are cached in an append-only JSONL file (:class:`AnswerCache`, the description cache's format and
crash safety), keyed by (query + product text hash, product id, judge model, prompt version): a pair is asked
once, across runs, and asked again when the product's text or the prompt changes.

Example::

    client = YesNoClient(OpenAIDescriber("http://127.0.0.1:11434/v1", "qwen2.5:7b"), JudgePrompt())
    client.ask("red dress", "dress: red, striped, a-line, cotton")          # True / False / None (no answer)
    answers = AnswerCache("runs/genfilt/answers.jsonl", client.name, client.prompt.version, product_text)
"""

from __future__ import annotations

import hashlib
import re
import string
from collections import Counter
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .base import DescribeError, Describer, ProductInput, PromptTemplate
from .cache import DescriptionCache

QUESTION_FIELDS = ("query", "product", "product_type")

_YES = {"yes", "y", "true", "relevant", "match", "matches"}
_NO = {"no", "n", "false", "irrelevant", "not"}
_WORD = re.compile(r"[a-z]+")


class JudgePrompt(BaseModel):
    """The versioned yes / no question; ``user`` is a template over ``{query}``, ``{product}`` (its description
    when there is one, else its title) and ``{product_type}``. Bump ``version`` when the text changes: cached
    answers are keyed by it.

    Example::

        JudgePrompt(version="v2", user="Query: {query}\\nProduct: {product}\\nSame thing? yes or no")
    """

    model_config = ConfigDict(extra="forbid")

    version: str = Field("v1", min_length=1)
    system: str = (
        "You judge e-commerce search results. Answer with one word: yes if the product is what the shopper "
        "asked for (every attribute in the query fits the product), no otherwise."
    )
    user: str = (
        "Search query: {query}\nProduct type: {product_type}\nProduct: {product}\n"
        "Is this product what the shopper asked for? Answer yes or no."
    )
    max_tokens: int = Field(4, ge=1)  # one word is enough; reasoning models get their think block stripped

    @field_validator("user")
    @classmethod
    def _check_fields(cls, value: str) -> str:
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as e:
            raise ValueError(f"bad template {value!r}: {e} (write literal braces as {{{{ and }}}})") from e
        unknown = names - set(QUESTION_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown field(s) {sorted(unknown)} in the judge prompt; allowed: "
                + ", ".join("{" + f + "}" for f in QUESTION_FIELDS)
            )
        return value

    def render(self, query: str, product: str, product_type: str = "") -> str:
        return self.user.format(query=query, product=product, product_type=product_type)


def parse_yes_no(text: str) -> bool | None:
    """The answer's first word as a decision: True (yes), False (no), or None (anything else)."""
    words = _WORD.findall(text.lower())
    if not words:
        return None
    if words[0] in _YES:
        return True
    if words[0] in _NO:
        return False
    return None


class YesNoClient:
    """Asks a describer yes / no questions about (query, product) pairs.

    ``ask_many`` sends a list of questions in one :meth:`Describer.describe_batch` call (concurrent for an
    OpenAI server, batched ``generate`` for a local model); ``ask`` is one question. A failed request or an
    answer that is neither yes nor no gives None (counted in ``stats`` with its reason), never an exception: the
    judge decides what an undecided pair means.

    Args:
        describer: any object with ``name`` and ``describe_batch(items, prompt)``.
        prompt: the question template.
    """

    def __init__(self, describer: Describer, prompt: JudgePrompt | None = None):
        self.describer = describer
        self.prompt = prompt or JudgePrompt()
        # The question is already rendered; the describer's template only passes it through.
        self._passthrough = PromptTemplate(
            version=self.prompt.version, system=self.prompt.system, user="{title}", max_tokens=self.prompt.max_tokens
        )
        self.stats: Counter[str] = Counter()

    @property
    def name(self) -> str:
        return f"yes-no:{self.describer.name}"

    def ask_many(self, questions: Sequence[tuple[str, str, str, str | None]]) -> list[bool | None]:
        """``questions``: (query, product_text, product_type, image_path or None) -> one answer each."""
        items = [
            ProductInput(f"q{i}", self.prompt.render(q, text, ptype), ptype, image)
            for i, (q, text, ptype, image) in enumerate(questions)
        ]
        out: list[bool | None] = []
        for result in self.describer.describe_batch(items, self._passthrough) if items else []:
            self.stats["asked"] += 1
            if isinstance(result, DescribeError):
                self.stats[f"failed:{result.reason}"] += 1
                out.append(None)
                continue
            answer = parse_yes_no(result)
            self.stats["yes" if answer else "no" if answer is False else "not_yes_or_no"] += 1
            out.append(answer)
        return out

    def ask(self, query: str, product_text: str, product_type: str = "", image_path: str | None = None) -> bool | None:
        return self.ask_many([(query, product_text, product_type, image_path)])[0]

    def __call__(self, query: str, product_text: str) -> bool | None:
        return self.ask(query, product_text)


def _pair_hash(query: str, product_text: str) -> str:
    h = hashlib.sha256()
    for part in (query, product_text):
        data = part.encode("utf-8")
        h.update(str(len(data)).encode() + b":" + data)
    return h.hexdigest()[:16]


class AnswerCache(MutableMapping[tuple[str, str], bool]):
    """Persistent ``(query, product_id) -> bool`` answers of one judge model and prompt version.

    Stored in a :class:`DescriptionCache` file (append-only, fsynced, torn-tail safe) with ``text`` "yes" / "no"
    and a content hash over the query and the product text that was shown, so a changed product is asked again.

    Args:
        path: the JSONL file.
        judge: the client's name (``YesNoClient.name``); prompt_version: the question's version.
        product_text: product_id -> the text shown to the model (must match what the judge shows).
    """

    def __init__(self, path: str | Path, judge: str, prompt_version: str, product_text: Callable[[str], str]):
        self.store = DescriptionCache(path)
        self.judge = judge
        self.version = prompt_version
        self.product_text = product_text

    def _key(self, key: tuple[str, str]) -> tuple[str, str, str, str]:
        query, pid = key
        return (pid, _pair_hash(query, self.product_text(pid)), self.judge, self.version)

    def __getitem__(self, key: tuple[str, str]) -> bool:
        answer = self.get(key)
        if answer is None:
            raise KeyError(key)
        return answer

    def get(self, key: tuple[str, str], default: bool | None = None) -> bool | None:  # type: ignore[override]
        query, pid = key
        text = self.store.get(
            ProductInput(pid, "", ""), self.judge, self.version, content_hash_=_pair_hash(query, self.product_text(pid))
        )
        return default if text is None else text == "yes"

    def __setitem__(self, key: tuple[str, str], value: bool) -> None:
        self.put_many([(key, value)])

    def put_many(self, answers: Sequence[tuple[tuple[str, str], bool]]) -> None:
        """Append several answers with one write and one fsync."""
        records = [(ProductInput(pid, "", ""), "yes" if value else "no") for (_, pid), value in answers]
        hashes = [_pair_hash(q, self.product_text(pid)) for (q, pid), _ in answers]
        self.store.put_many(records, self.judge, self.version, content_hashes=hashes)

    def __delitem__(self, key: tuple[str, str]) -> None:
        raise TypeError("AnswerCache is append-only")

    def __iter__(self) -> Iterator[tuple[str, str]]:
        raise TypeError("AnswerCache keys are hashed: iterate over .store.items() instead")

    def __len__(self) -> int:
        mine = (self.judge, self.version)
        return sum(1 for r in self.store.items() if (r["describer"], r["prompt_version"]) == mine)
