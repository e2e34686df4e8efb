"""What every describer shares: the product it describes, the prompt it uses, the errors it reports.

GenFilt stage 1 turns each product (title, product type, optional image) into a short canonical description of
what it is. A :class:`Describer` does the generation (a local HF model, an OpenAI-compatible server...); the
:class:`~querylife.genfilt.cache.DescriptionCache` keeps the answers keyed by ``(product_id, content_hash,
describer name, prompt version)`` so that reruns only describe what is new or changed.

Example::

    item = ProductInput("p1", "Floral midi dress", "dress", "/data/img/p1.jpg")
    prompt = PromptTemplate()
    print(prompt.render(item))
    print(content_hash(item))  # changes when the title, the type or the image bytes change
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Fields a prompt's user text may use; anything else is rejected when the template is built, so a typo in a
# config file fails at load time rather than on the first product.
PROMPT_FIELDS = ("product_id", "title", "product_type")

# Reasons a description can fail with (``http_<code>`` stands for every HTTP status).
REASONS = ("unreachable", "timeout", "http_<code>", "garbage", "empty")


@dataclass(frozen=True)
class ProductInput:
    """One product to describe.

    ``image_path`` is a local file (absolute, as the normalised catalogue gives it), an ``http(s)://`` URL, or
    None for a product without a photo.

    Example::

        ProductInput(product_id="p1", title="USB-C cable 2m", product_type="cable")
    """

    product_id: str
    title: str
    product_type: str
    image_path: str | None = None


def _is_url(path: str) -> bool:
    return "://" in path


def content_hash(item: ProductInput) -> str:
    """Fingerprint of what a describer sees: title, product type and the image file's bytes.

    Each part is length-prefixed so that moving text from the title into the type cannot collide. A missing
    or unreadable image hashes as its path plus ``"missing"`` (so the product is described again once the file
    appears); a URL hashes as the URL (we never fetch). The product id is not part of the hash: it is a key
    of its own in the cache.

    Returns:
        The first 16 hex digits of a SHA-256.
    """
    h = hashlib.sha256()

    def part(tag: bytes, data: bytes) -> None:
        h.update(tag + b":" + str(len(data)).encode() + b":" + data)

    part(b"title", item.title.encode("utf-8"))
    part(b"type", item.product_type.encode("utf-8"))
    path = item.image_path
    if path:
        if _is_url(path):
            part(b"image-url", path.encode("utf-8"))
        else:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                part(b"image-missing", path.encode("utf-8") + b"missing")
            else:
                part(b"image", data)
    return h.hexdigest()[:16]


class PromptTemplate(BaseModel):
    """The versioned prompt a describer sends; lives in the config so that a change is deliberate.

    ``user`` is a :meth:`str.format` template over ``{product_id}``, ``{title}`` and ``{product_type}``
    (literal braces are doubled: ``{{`` ``}}``); ``system`` is sent as written. The cache is keyed by
    ``version``, not by the text: **bump the version whenever the text or the generation settings change**,
    or old descriptions will be reused.

    Example::

        prompt = PromptTemplate(version="v2", user="Type: {product_type}\\nTitle: {title}\\nWhat is it?")
        prompt.render(ProductInput("p1", "Red dress", "dress"))
    """

    model_config = ConfigDict(extra="forbid")

    version: str = Field("v1", min_length=1)
    system: str = (
        "You describe e-commerce products for a search engine. Say what the product is and the attributes a "
        "shopper would search for, in plain lower-case words, most important first. Never invent an attribute "
        "you cannot read in the title or see in the photo; leave out prices, shipping, seller names and "
        "marketing words. Answer with the description only."
    )
    user: str = (
        "Product type: {product_type}\nTitle: {title}\nDescribe what this product is: its type and its key "
        "attributes (colour, pattern, shape, material, size, capacity, model...), as a short comma-separated "
        "list. Use the photo when one is given."
    )
    max_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0.0)

    @field_validator("user")
    @classmethod
    def _check_fields(cls, value: str) -> str:
        try:
            parsed = list(string.Formatter().parse(value))
        except ValueError as e:  # a lone "{" or "}"
            raise ValueError(f"bad template {value!r}: {e} (write literal braces as {{{{ and }}}})") from e
        for _, name, spec, _ in parsed:
            if name is None:
                continue
            if name not in PROMPT_FIELDS:
                raise ValueError(
                    f"unknown field {{{name}}} in the prompt; allowed: "
                    + ", ".join("{" + f + "}" for f in PROMPT_FIELDS)
                )
            if spec and "{" in spec:
                raise ValueError(f"nested fields in the format spec of {{{name}}} are not allowed")
        # A bad format spec ({title:d}) only fails when formatting, so try it once now.
        try:
            value.format(**{f: "x" for f in PROMPT_FIELDS})
        except (ValueError, IndexError, KeyError) as e:
            raise ValueError(f"bad template {value!r}: {e}") from e
        return value

    def render(self, item: ProductInput) -> str:
        """The user message for ``item`` (the fields were checked when the template was built)."""
        return self.user.format(product_id=item.product_id, title=item.title, product_type=item.product_type)


class DescribeError(RuntimeError):
    """Why one product (or a whole server) could not be described.

    ``reason`` is a short, countable code: ``"unreachable"``, ``"timeout"``, ``"http_<code>"`` (e.g.
    ``"http_401"``), ``"garbage"`` (an answer that is not an OpenAI-style completion) or ``"empty"`` (a
    completion with no text); the message says more (URL, body excerpt, the fix).

    Example::

        try:
            describer.check()
        except DescribeError as e:
            print(e.reason, e)
    """

    def __init__(self, reason: str, message: str | None = None) -> None:
        self.reason = reason
        self.message = message or reason
        super().__init__(self.message if message is None else f"{reason}: {message}")

    def __reduce__(self):  # keep the two-argument constructor through pickling (process pools, Ray)
        return (type(self), (self.reason, None if self.message == self.reason else self.message))


@runtime_checkable
class Describer(Protocol):
    """Anything that turns products into descriptions.

    ``name`` is a stable id that goes into the cache key (e.g. ``"openai:http://127.0.0.1:8000/v1:qwen2-vl"``):
    two describers that can answer differently must have different names.
    """

    name: str

    def describe_batch(self, items: Sequence[ProductInput], prompt: PromptTemplate) -> list[str | DescribeError]:
        """One description (or the error for that product) per item, in the same order.

        A failure of one product must not fail the batch; raising is for bugs and for stopping the run.
        """
        ...


def normalise_text(text: str, max_chars: int) -> str:
    """Collapse runs of whitespace and cap the length (at a word boundary when there is one nearby)."""
    text = " ".join(text.split())
    if len(text) > max_chars:
        cut = text[:max_chars]
        space = cut.rfind(" ")
        text = cut[:space] if space > max_chars * 0.8 else cut
        text = text.rstrip(" ,;")
    return text
