"""Describer for any OpenAI-compatible chat-completions server: vLLM, Ollama, llama.cpp server, hosted APIs.

Requests go to ``POST {base_url}/chat/completions``, a few at a time (``max_concurrency``), with a timeout,
retries with exponential backoff and jitter on timeouts, connection errors, 429 and 5xx, and no retry on
other 4xx (a wrong key or model name will not fix itself). Photos are sent inline as base64 data URLs in an
``image_url`` content part (downscaled to ``max_image_side`` first), so the server needs no access to our
files; an ``http(s)://`` image path is passed through as a URL.

Only the standard library is used for HTTP, so this adds no dependency. Environment proxies
(``HTTPS_PROXY``...) are honoured except for loopback servers.

Example::

    describer = OpenAIDescriber("http://127.0.0.1:8000/v1", "Qwen/Qwen2-VL-2B-Instruct")
    describer.check()  # clear error now if the server is down, rather than one per product
    texts = describer.describe_batch(items, PromptTemplate())
"""

from __future__ import annotations

import base64
import http.client
import io
import ipaddress
import json
import logging
import os
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .base import DescribeError, ProductInput, PromptTemplate, normalise_text

log = logging.getLogger(__name__)

# Reasoning models (Qwen3, DeepSeek-R1...) served without a reasoning parser put their thoughts in the content.
_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_RETRY_AFTER_CAP_S = 60.0
_IMAGE_MIME = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"}


def _excerpt(data: bytes | str, n: int = 200) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = " ".join(text.split())
    return repr(text[:n] + ("..." if len(text) > n else ""))


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _sniff_mime(data: bytes) -> str | None:
    for magic, mime in _IMAGE_MIME.items():
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_data_url(path: str, max_side: int | None = 1024) -> str:
    """A ``data:`` URL for the image file at ``path``.

    PNG, JPEG, GIF and WebP files are sent as they are when they fit ``max_side``; other formats (BMP,
    TIFF...) and larger images are re-encoded with Pillow (PNG when the image has transparency, else JPEG),
    because vision-language models resize to a few hundred pixels anyway and a 12-megapixel photo makes a
    multi-megabyte request.

    Raises:
        OSError: the file cannot be read or decoded.
    """
    with open(path, "rb") as f:
        data = f.read()
    mime = _sniff_mime(data)
    needs_resize = False
    if max_side is not None or mime is None:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                needs_resize = max_side is not None and max(im.size) > max_side
                if mime is None or needs_resize:
                    im.load()
                    if needs_resize:
                        im.thumbnail((max_side, max_side))
                    alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
                    buf = io.BytesIO()
                    if alpha:
                        im.save(buf, format="PNG")
                        mime = "image/png"
                    else:
                        im.convert("RGB").save(buf, format="JPEG", quality=90)
                        mime = "image/jpeg"
                    data = buf.getvalue()
        except OSError:
            raise
        except Exception as e:  # Pillow raises assorted errors on corrupt files
            raise OSError(f"cannot decode image {path}: {e}") from e
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


@dataclass
class OpenAIDescriber:
    """Describes products with an OpenAI-compatible chat-completions server.

    Args:
        base_url: the API root, usually ending in ``/v1`` (``http://127.0.0.1:8000/v1`` for vLLM,
            ``http://127.0.0.1:11434/v1`` for Ollama, ``http://127.0.0.1:8080/v1`` for llama.cpp server).
        model: the model name the server expects (``GET {base_url}/models`` lists them).
        api_key: sent as ``Authorization: Bearer``; None reads ``OPENAI_API_KEY`` (empty: no header). Never
            logged, never in ``repr``.
        max_concurrency: requests in flight at once (per describer instance, across threads).
        timeout_s: seconds to connect, and then to wait for each chunk of the answer (a non-streamed completion
            sends nothing until it is done, so this bounds the generation time).
        max_retries: retries after the first attempt (so at most ``1 + max_retries`` requests per product).
        backoff_s: the n-th retry waits ``backoff_s * 2**n`` seconds times a random factor in [0.5, 1.5)
            (or the server's ``Retry-After``, if longer, capped at 60 s).
        send_images: send photos (set False for a text-only model).
        max_image_side: longer photos are downscaled to this many pixels before sending; None sends as is.
        max_chars: descriptions longer than this are cut (at a word boundary when possible).

    Example::

        d = OpenAIDescriber("http://127.0.0.1:11434/v1", "llava:7b", max_concurrency=2)
        d.name  # 'openai:http://127.0.0.1:11434/v1:llava:7b', part of the cache key
    """

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    max_concurrency: int = 4
    timeout_s: float = 30.0
    max_retries: int = 3
    backoff_s: float = 0.5
    send_images: bool = True
    max_image_side: int | None = 1024
    max_chars: int = 500
    _semaphore: threading.BoundedSemaphore = field(init=False, repr=False, compare=False)
    _opener: urllib.request.OpenerDirector = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.strip().rstrip("/")
        parsed = urllib.parse.urlsplit(self.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {self.base_url!r}")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.max_retries < 0 or self.timeout_s <= 0 or self.backoff_s < 0:
            raise ValueError("max_retries and backoff_s must be >= 0 and timeout_s > 0")
        if self.api_key is None:
            self.api_key = os.environ.get("OPENAI_API_KEY") or None
        self._semaphore = threading.BoundedSemaphore(self.max_concurrency)
        # A proxy in the environment is for the outside world; sending loopback traffic to it only breaks
        # local servers (urllib would unless NO_PROXY lists them).
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(parsed.hostname) else []
        self._opener = urllib.request.build_opener(*handlers)

    def __getstate__(self) -> dict:
        # Locks and openers do not pickle; rebuilt on arrival (for process pools and Ray workers).
        return {k: v for k, v in self.__dict__.items() if k not in ("_semaphore", "_opener")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    @property
    def name(self) -> str:
        """Stable id for the cache key: ``openai:{base_url}:{model}``."""
        return f"openai:{self.base_url}:{self.model}"

    # ------------------------------------------------------------------------------------------------------
    # HTTP

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _request_once(self, method: str, path: str, body: bytes | None, timeout: float) -> bytes:
        """One HTTP exchange; returns the body of a 2xx answer, raises :class:`_Attempt` otherwise."""
        url = f"{self.base_url}{path}"
        req = urllib.request.Request(url, data=body, method=method, headers=self._headers())
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as e:
            try:
                detail = e.read()
            except Exception:  # the body of an error answer is a courtesy
                detail = b""
            finally:
                e.close()
            retry = e.code == 429 or e.code >= 500
            after = _retry_after(e.headers.get("Retry-After") if e.headers else None)
            raise _Attempt(
                DescribeError(f"http_{e.code}", f"{method} {url} answered {e.code} {e.reason}: {_excerpt(detail)}"),
                retry,
                after,
            ) from None
        except urllib.error.URLError as e:
            cause = e.reason
            if isinstance(cause, TimeoutError):  # socket.timeout is TimeoutError since 3.10
                raise _Attempt(
                    DescribeError("timeout", f"{method} {url}: no answer within {timeout:g} s"), True
                ) from None
            raise _Attempt(DescribeError("unreachable", f"cannot connect to {url}: {cause}"), True) from None
        except TimeoutError:  # raised while reading the answer
            raise _Attempt(DescribeError("timeout", f"{method} {url}: no answer within {timeout:g} s"), True) from None
        except (http.client.HTTPException, ConnectionError, OSError) as e:
            # The server dropped the connection or spoke something that is not HTTP.
            raise _Attempt(
                DescribeError("unreachable", f"{method} {url}: connection failed: {type(e).__name__}: {e}"), True
            ) from None

    def _request(self, method: str, path: str, body: bytes | None, *, retries: int | None = None) -> bytes:
        """:meth:`_request_once` with retries; the concurrency slot is held only while a request is in flight."""
        retries = self.max_retries if retries is None else retries
        attempt = 0
        while True:
            with self._semaphore:
                try:
                    return self._request_once(method, path, body, self.timeout_s)
                except _Attempt as a:
                    failure = a
            if not failure.retry or attempt >= retries:
                raise failure.error
            delay = self.backoff_s * 2**attempt * (0.5 + random.random())
            if failure.retry_after is not None:
                delay = max(delay, failure.retry_after)
            log.debug("retry %d/%d in %.2f s after %s", attempt + 1, retries, delay, failure.error)
            time.sleep(delay)
            attempt += 1

    # ------------------------------------------------------------------------------------------------------
    # describing

    def _messages(self, item: ProductInput, prompt: PromptTemplate) -> list[dict]:
        text = prompt.render(item)
        user: str | list[dict] = text
        if self.send_images and item.image_path:
            url = None
            path = item.image_path
            # Described from the text alone when the photo cannot be sent: the content hash covers the image
            # bytes (or their absence), so the product is described again once the file is there or fixed.
            if path.startswith(("http://", "https://")):
                url = path  # the server fetches it
            elif "://" in path:
                log.warning("product %s: image %s not sent (only http(s) URLs are passed on)", item.product_id, path)
            else:
                try:
                    url = image_data_url(path, self.max_image_side)
                except OSError as e:
                    log.warning("product %s: image not sent (%s); describing from the text", item.product_id, e)
            if url is not None:
                user = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]
        messages: list[dict] = []
        if prompt.system:
            messages.append({"role": "system", "content": prompt.system})
        messages.append({"role": "user", "content": user})
        return messages

    def _parse_completion(self, body: bytes) -> str:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise DescribeError("garbage", f"answer is not JSON: {_excerpt(body)}") from None
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise DescribeError("garbage", f"answer has no choices[0].message.content: {_excerpt(body)}") from None
        if isinstance(content, list):  # some servers answer with content parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise DescribeError("garbage", f"choices[0].message.content is not text: {_excerpt(body)}")
        text = normalise_text(_THINK.sub(" ", content), self.max_chars)
        if not text:
            raise DescribeError("empty", f"the model answered with no text: {_excerpt(body)}")
        return text

    def describe_one(self, item: ProductInput, prompt: PromptTemplate) -> str:
        """Describe one product; raises :class:`DescribeError`."""
        payload = {
            "model": self.model,
            "messages": self._messages(item, prompt),
            "max_tokens": prompt.max_tokens,
            "temperature": prompt.temperature,
        }
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        return self._parse_completion(self._request("POST", "/chat/completions", body))

    def describe_batch(self, items: Sequence[ProductInput], prompt: PromptTemplate) -> list[str | DescribeError]:
        """Descriptions in the order of ``items``; a product that fails gets its :class:`DescribeError`."""

        def one(item: ProductInput) -> str | DescribeError:
            try:
                return self.describe_one(item, prompt)
            except DescribeError as e:
                return e

        if not items:
            return []
        if len(items) == 1:
            return [one(items[0])]
        # Threads rather than asyncio: the work is blocking HTTP and the semaphore bounds the in-flight count
        # even when several batches run at once.
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(items)), thread_name_prefix="genfilt") as ex:
            return list(ex.map(one, items))

    def check(self) -> None:
        """Fail fast, with the fix in the message, when the server cannot serve ``model``.

        Asks ``GET {base_url}/models`` once (no retries). Raises :class:`DescribeError`: ``"unreachable"``
        (nothing listening, DNS, connection dropped), ``"timeout"``, ``"http_<code>"`` (401/403: the key;
        404: the URL or the model name) or ``"garbage"`` (not an OpenAI-compatible server).
        """
        hint = (
            "Start the server (e.g. `vllm serve MODEL`, `ollama serve`, `llama-server -m MODEL.gguf`) or fix "
            "the base URL (it usually ends with /v1)."
        )
        try:
            body = self._request("GET", "/models", None, retries=0)
        except DescribeError as e:
            if e.reason in ("unreachable", "timeout"):
                raise DescribeError(
                    e.reason, f"cannot reach the OpenAI-compatible server at {self.base_url}: {e.message}. {hint}"
                ) from None
            if e.reason in ("http_401", "http_403"):
                raise DescribeError(
                    e.reason,
                    f"{self.base_url} refused the API key ({e.message}). Set "
                    "OPENAI_API_KEY (or api_key) to a key the server accepts.",
                ) from None
            if e.reason == "http_404":
                raise DescribeError(
                    e.reason,
                    f"{self.base_url}/models not found ({e.message}). Is the base URL right? It usually ends with /v1.",
                ) from None
            raise
        try:
            data = json.loads(body)
            ids = [m["id"] for m in data["data"] if isinstance(m, dict) and "id" in m]
        except (ValueError, UnicodeDecodeError, KeyError, TypeError):
            raise DescribeError(
                "garbage", f"{self.base_url}/models is not an OpenAI-compatible model list: {_excerpt(body)}. {hint}"
            ) from None
        # Ollama serves "llava" as "llava:latest".
        if ids and self.model not in ids and f"{self.model}:latest" not in ids:
            raise DescribeError(
                "http_404", f"model {self.model!r} is not served at {self.base_url}; it serves: " + ", ".join(ids[:20])
            )


class _Attempt(Exception):
    """One failed exchange: the error to report, whether a retry may help, and the server's Retry-After."""

    def __init__(self, error: DescribeError, retry: bool, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry = retry
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (only the delta-seconds form; dates are rare on these APIs)."""
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), _RETRY_AFTER_CAP_S)
    except ValueError:
        return None
