"""OpenAIDescriber against a real HTTP server on loopback that speaks the OpenAI chat-completions API.

:class:`FakeOpenAIServer` answers from a table keyed by the product title it finds in the request, and can be
told to misbehave per title (sleep, fail with a status n times, answer garbage). It records every request and
the largest number in flight at once. ``test_genfilt_describe.py`` reuses it.
"""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from querylife.genfilt import DescribeError, OpenAIDescriber, ProductInput, PromptTemplate

_TITLE = re.compile(r"Title: (.*)")


@dataclass
class Misbehave:
    """How the server treats one title: sleep first, fail with ``status`` for the first ``times`` requests
    (``times=None``: always), or answer ``garbage`` ("not_json", "no_choices", "empty", "blank")."""

    sleep: float = 0.0
    status: int | None = None
    times: int | None = None
    retry_after: str | None = None
    garbage: str | None = None
    answer: str | None = None  # raw content to return instead of the table's


@dataclass
class FakeOpenAIServer:
    """A ThreadingHTTPServer on 127.0.0.1 (port 0) implementing ``GET /v1/models`` and
    ``POST /v1/chat/completions``. Use as a context manager; ``url`` is the ``/v1`` base URL."""

    table: dict[str, str] = field(default_factory=dict)
    rule: Callable[[str], str] | None = None  # answer for titles not in the table (default: "desc of <title>")
    delay: float = 0.0  # every completion sleeps this long, so that concurrent requests overlap
    api_key: str | None = None  # when set, requests without "Bearer <api_key>" get 401
    models: tuple[str, ...] = ("m",)
    models_garbage: bool = False
    misbehave: dict[str, Misbehave] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.requests: list[dict] = []  # parsed JSON bodies of completions, in arrival order
        self.auth_headers: list[str | None] = []
        self.counts: Counter[str] = Counter()  # title -> completion requests
        self.in_flight = 0
        self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _authorised(self) -> bool:
                auth = self.headers.get("Authorization")
                with server.lock:
                    server.auth_headers.append(auth)
                if server.api_key is not None and auth != f"Bearer {server.api_key}":
                    self._send(401, b'{"error": {"message": "Incorrect API key provided"}}')
                    return False
                return True

            def do_GET(self) -> None:
                if self.path != "/v1/models":
                    self._send(404, b'{"error": "not found"}')
                elif self._authorised():
                    if server.models_garbage:
                        self._send(200, b"<html>hello</html>")
                    else:
                        data = {"object": "list", "data": [{"id": m, "object": "model"} for m in server.models]}
                        self._send(200, json.dumps(data).encode())

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/chat/completions":
                    self._send(404, b'{"error": "not found"}')
                    return
                if not self._authorised():
                    return
                payload = json.loads(body)
                title = server.title_of(payload)
                with server.lock:
                    server.requests.append(payload)
                    server.counts[title] += 1
                    n = server.counts[title]
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    status, answer, headers = self._complete(payload, title, n)
                finally:
                    # Counted out before the answer leaves: once the client has it, it may start its next
                    # request, and counting that one while this thread is still here would over-count.
                    with server.lock:
                        server.in_flight -= 1
                self._send(status, answer, headers)

            def _complete(self, payload: dict, title: str, n: int) -> tuple[int, bytes, dict[str, str] | None]:
                rule = server.misbehave.get(title, Misbehave())
                server.stopping.wait(server.delay + rule.sleep)
                if rule.status is not None and (rule.times is None or n <= rule.times):
                    headers = {"Retry-After": rule.retry_after} if rule.retry_after else None
                    return rule.status, b'{"error": {"message": "scripted failure"}}', headers
                if rule.garbage == "not_json":
                    return 200, b"<html>502 Bad Gateway</html>", None
                if rule.garbage == "no_choices":
                    return 200, b'{"id": "x", "object": "chat.completion"}', None
                content = rule.answer if rule.answer is not None else server.answer_for(title)
                if rule.garbage == "empty":
                    content = ""
                elif rule.garbage == "blank":
                    content = "  \n\t "
                answer = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": payload.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
                }
                return 200, json.dumps(answer).encode(), None

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                pass  # a client that timed out and hung up is expected here

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def answer_for(self, title: str) -> str:
        if title in self.table:
            return self.table[title]
        return self.rule(title) if self.rule is not None else f"desc of {title}"

    @staticmethod
    def title_of(payload: dict) -> str:
        content = payload["messages"][-1]["content"]
        text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)
        m = _TITLE.search(text)
        return m.group(1).strip() if m else ""

    def __enter__(self) -> FakeOpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()  # wake sleeping handlers
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def requests_for(self, title: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if self.title_of(r) == title]


def stub_descriptions(catalog, path, describer: str = "stub", version: str = "v1") -> None:
    """Write "<type>: <title>" for every catalogue product into a description cache: a stand-in for a describer's
    output in tests that exercise the judges' plumbing (never presented as a model's output)."""
    from querylife.genfilt import DescriptionCache, products_from_catalog

    items = products_from_catalog(catalog)
    DescriptionCache(path).put_many([(it, f"{it.product_type}: {it.title}") for it in items], describer, version)


def closed_port_url() -> str:
    """A loopback URL with nothing listening (the port was just bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def items_for(*titles: str, image: str | None = None) -> list[ProductInput]:
    return [ProductInput(f"p{i}", t, "dress", image) for i, t in enumerate(titles)]


PROMPT = PromptTemplate()


def describer(url: str, **kw) -> OpenAIDescriber:
    kw.setdefault("api_key", "")
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 5.0)
    return OpenAIDescriber(url, "m", **kw)


# ----------------------------------------------------------------------------------------------------------
# happy path, request shape


def test_answers_in_order_with_request_shape():
    table = {"red dress": "red floral midi dress", "usb cable": "usb-c cable, 2 m"}
    with FakeOpenAIServer(table=table) as srv:
        d = describer(srv.url)
        out = d.describe_batch(items_for("red dress", "usb cable", "other"), PROMPT)
        assert out == ["red floral midi dress", "usb-c cable, 2 m", "desc of other"]
        body = srv.requests_for("red dress")[0]
        assert body["model"] == "m"
        assert body["max_tokens"] == PROMPT.max_tokens and body["temperature"] == PROMPT.temperature
        assert body["messages"][0] == {"role": "system", "content": PROMPT.system}
        # No image: plain string content (text-only servers reject content parts).
        assert body["messages"][1]["content"] == PROMPT.render(items_for("red dress")[0])
    assert d.name == f"openai:{srv.url}:m"
    assert d.describe_batch([], PROMPT) == []


def test_text_is_cleaned_and_capped():
    misbehave = {
        "spaces": Misbehave(answer="  red \n\n floral\tdress  "),
        "think": Misbehave(answer="<think>the user wants...</think>\nblue shirt"),
        "long": Misbehave(answer="word " * 200),
    }
    with FakeOpenAIServer(misbehave=misbehave) as srv:
        out = describer(srv.url, max_chars=50).describe_batch(items_for("spaces", "think", "long"), PROMPT)
    assert out[0] == "red floral dress"
    assert out[1] == "blue shirt"
    assert 40 <= len(out[2]) <= 50 and out[2].endswith("word")


def test_images_are_sent_as_data_urls(tmp_path):
    from PIL import Image

    png = tmp_path / "small.png"
    Image.new("RGB", (8, 8), (200, 0, 0)).save(png)
    big = tmp_path / "big.png"
    Image.new("RGB", (600, 30), (0, 0, 200)).save(big)
    items = [
        ProductInput("a", "small", "dress", str(png)),
        ProductInput("b", "big", "dress", str(big)),
        ProductInput("c", "gone", "dress", str(tmp_path / "missing.png")),
        ProductInput("d", "web", "dress", "https://img.example/d.jpg"),
        ProductInput("e", "bucket", "dress", "s3://bucket/e.jpg"),
    ]
    with FakeOpenAIServer() as srv:
        out = describer(srv.url, max_image_side=64).describe_batch(items, PROMPT)
        assert out == ["desc of small", "desc of big", "desc of gone", "desc of web", "desc of bucket"]
        raw = [json.dumps(srv.requests_for(t)[0]) for t in ("small", "big", "gone", "web", "bucket")]
        parts = json.loads(raw[0])["messages"][1]["content"]
        assert parts[0] == {"type": "text", "text": PROMPT.render(items[0])}
        assert parts[1]["type"] == "image_url"
        url = parts[1]["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        assert base64.b64decode(url.split(",", 1)[1]) == png.read_bytes()  # small PNGs go as they are
        # A big photo is downscaled (and re-encoded) before sending.
        big_url = json.loads(raw[1])["messages"][1]["content"][1]["image_url"]["url"]
        assert big_url.startswith("data:image/jpeg;base64,")
        assert max(Image.open(io.BytesIO(base64.b64decode(big_url.split(",", 1)[1]))).size) == 64
        # A missing file: described from the text; a URL: passed through for the server to fetch.
        assert "image_url" not in raw[2]
        assert '"url": "https://img.example/d.jpg"' in raw[3]
        assert "image_url" not in raw[4]  # the server could not fetch it either

        srv.requests.clear()
        describer(srv.url, send_images=False).describe_batch(items[:1], PROMPT)
        assert "data:image" not in json.dumps(srv.requests)


def test_api_key_is_sent_as_bearer_and_never_shown(monkeypatch):
    with FakeOpenAIServer(api_key="sk-secret") as srv:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
        d = OpenAIDescriber(srv.url, "m")  # key from the environment
        assert d.describe_batch(items_for("x"), PROMPT) == ["desc of x"]
        assert srv.auth_headers[-1] == "Bearer sk-secret"
        d.check()
        assert "sk-secret" not in repr(d)

        wrong = describer(srv.url, api_key="sk-wrong")
        (err,) = wrong.describe_batch(items_for("y"), PROMPT)
        assert isinstance(err, DescribeError) and err.reason == "http_401"
        assert "sk-wrong" not in str(err)
        assert srv.counts["y"] == 0  # refused before the handler counted it: one request, see below
        assert srv.auth_headers.count("Bearer sk-wrong") == 1  # no retry on 401
        with pytest.raises(DescribeError, match="OPENAI_API_KEY") as info:
            wrong.check()
        assert info.value.reason == "http_401"

        monkeypatch.delenv("OPENAI_API_KEY")
        assert OpenAIDescriber(srv.url, "m").api_key is None


# ----------------------------------------------------------------------------------------------------------
# concurrency, retries, timeouts


def test_concurrency_is_bounded():
    titles = [f"t{i}" for i in range(12)]
    with FakeOpenAIServer(delay=0.1) as srv:
        d = describer(srv.url, max_concurrency=3)
        out = d.describe_batch(items_for(*titles), PROMPT)
        assert out == [f"desc of {t}" for t in titles]
        assert 2 <= srv.max_in_flight <= 3  # it did overlap, and never beyond the bound

        # The bound holds per describer even when two threads call describe_batch at once.
        srv.max_in_flight = 0
        threads = [threading.Thread(target=d.describe_batch, args=(items_for(*titles), PROMPT)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert 2 <= srv.max_in_flight <= 3


def test_retries_on_5xx_and_429_then_gives_up():
    misbehave = {
        "flaky": Misbehave(status=500, times=2),
        "busy": Misbehave(status=429, times=1, retry_after="0"),
        "down": Misbehave(status=503),
        "bad": Misbehave(status=400),
    }
    with FakeOpenAIServer(misbehave=misbehave) as srv:
        out = describer(srv.url, max_retries=3).describe_batch(items_for("flaky", "busy", "down", "bad"), PROMPT)
        assert out[:2] == ["desc of flaky", "desc of busy"]
        assert srv.counts["flaky"] == 3 and srv.counts["busy"] == 2
        assert isinstance(out[2], DescribeError) and out[2].reason == "http_503"
        assert srv.counts["down"] == 4  # 1 + max_retries
        assert "scripted failure" in str(out[2])  # the server's message is kept
        assert isinstance(out[3], DescribeError) and out[3].reason == "http_400"
        assert srv.counts["bad"] == 1  # other 4xx: no retry

        srv.counts.clear()
        (err,) = describer(srv.url, max_retries=0).describe_batch(items_for("down"), PROMPT)
        assert err.reason == "http_503" and srv.counts["down"] == 1


def test_backoff_grows_exponentially():
    with FakeOpenAIServer(misbehave={"down": Misbehave(status=500)}) as srv:
        t0 = time.monotonic()
        describer(srv.url, max_retries=3, backoff_s=0.05).describe_batch(items_for("down"), PROMPT)
        elapsed = time.monotonic() - t0
    # waits 0.05, 0.1, 0.2 s, each times a factor in [0.5, 1.5): 0.175 to 0.525 s
    assert 0.17 <= elapsed < 1.5


def test_timeout_surfaces_within_bounded_time():
    with FakeOpenAIServer(misbehave={"slow": Misbehave(sleep=10)}) as srv:
        d = describer(srv.url, timeout_s=0.3, max_retries=1)
        t0 = time.monotonic()
        out = d.describe_batch(items_for("slow", "fast"), PROMPT)
        elapsed = time.monotonic() - t0
        assert isinstance(out[0], DescribeError) and out[0].reason == "timeout"
        assert "0.3 s" in str(out[0])
        assert out[1] == "desc of fast"  # one failure does not fail the batch
        assert srv.counts["slow"] == 2  # timeouts are retried
    assert elapsed < 2.0  # 2 x 0.3 s + backoff, far from the server's 10 s


@pytest.mark.parametrize(
    ("garbage", "reason", "excerpt"),
    [
        ("not_json", "garbage", "Bad Gateway"),
        ("no_choices", "garbage", "chat.completion"),
        ("empty", "empty", ""),
        ("blank", "empty", ""),
    ],
)
def test_garbage_answers(garbage, reason, excerpt):
    with FakeOpenAIServer(misbehave={"x": Misbehave(garbage=garbage)}) as srv:
        (err,) = describer(srv.url).describe_batch(items_for("x"), PROMPT)
        assert isinstance(err, DescribeError) and err.reason == reason
        assert excerpt in str(err)
        assert srv.counts["x"] == 1  # a well-formed wrong answer will not improve by asking again


# ----------------------------------------------------------------------------------------------------------
# check() and unreachable servers


def test_unreachable_server():
    url = closed_port_url()
    d = describer(url, max_retries=2)
    with pytest.raises(DescribeError) as info:
        d.check()
    assert info.value.reason == "unreachable"
    assert url in str(info.value) and "/v1" in str(info.value) and "serve" in str(info.value)
    t0 = time.monotonic()
    (err,) = d.describe_batch(items_for("x"), PROMPT)
    assert err.reason == "unreachable" and url in str(err)
    assert time.monotonic() - t0 < 2.0


def test_check_model_and_garbage():
    with FakeOpenAIServer(models=("qwen2-vl", "llava:latest")) as srv:
        OpenAIDescriber(srv.url, "qwen2-vl").check()
        OpenAIDescriber(srv.url, "llava").check()  # Ollama's implicit :latest
        with pytest.raises(DescribeError, match="qwen2-vl") as info:
            OpenAIDescriber(srv.url, "gpt-x").check()
        assert info.value.reason == "http_404"
        with pytest.raises(DescribeError, match="ends with /v1") as info:
            OpenAIDescriber(srv.url.removesuffix("/v1"), "qwen2-vl").check()
        srv.models_garbage = True
        with pytest.raises(DescribeError, match="not an OpenAI-compatible") as info:
            OpenAIDescriber(srv.url, "qwen2-vl").check()
        assert info.value.reason == "garbage"


def test_bad_settings():
    with pytest.raises(ValueError, match="http"):
        OpenAIDescriber("127.0.0.1:8000/v1", "m")
    with pytest.raises(ValueError, match="max_concurrency"):
        OpenAIDescriber("http://127.0.0.1:8000/v1", "m", max_concurrency=0)
    assert OpenAIDescriber("http://127.0.0.1:8000/v1/", "m").name == "openai:http://127.0.0.1:8000/v1:m"


def test_describe_error_pickles():
    import pickle

    e = pickle.loads(pickle.dumps(DescribeError("timeout", "no answer within 3 s")))
    assert e.reason == "timeout" and str(e) == "timeout: no answer within 3 s"
    assert str(pickle.loads(pickle.dumps(DescribeError("empty")))) == "empty"


def test_describer_pickles_for_worker_processes():
    import pickle

    with FakeOpenAIServer() as srv:
        d = pickle.loads(pickle.dumps(describer(srv.url, max_concurrency=2)))
        assert d.name == f"openai:{srv.url}:m" and d.max_concurrency == 2
        assert d.describe_batch(items_for("a", "b"), PROMPT) == ["desc of a", "desc of b"]
