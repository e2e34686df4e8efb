"""Service settings: limits, micro-batching, threads and auth, one validated model (unknown keys are errors).

Every limit protects the service from one way a request can cost more than it should; each default says why.

Example::

    settings = ServeConfig(max_candidates=500, api_key_env="QUERYLIFE_API_KEY")
    settings = load_serve_config("serve.yaml", ["batcher.max_wait_ms=1"])
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["BatcherConfig", "ServeConfig", "load_serve_config"]


class BatcherConfig(BaseModel):
    """Micro-batching of query encoding across concurrent requests (querylife.serve.batcher)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True  # one tower forward for many queries beats many forwards once requests overlap
    max_batch: int = Field(default=32, ge=1, le=1024)  # queries per forward: past ~32 a CPU forward stops amortising
    max_wait_ms: float = Field(default=2.0, ge=0.0, le=100.0)  # wait for company; bounded so p99 barely moves
    cache_size: int = Field(default=10_000, ge=0)  # query vectors kept (LRU): head queries repeat a lot; 0 = off


class ServeConfig(BaseModel):
    """Limits and behaviour of ``querylife serve`` (docs/SERVING.md, "Service")."""

    model_config = ConfigDict(extra="forbid")
    max_candidates: int = Field(default=1000, ge=1)  # per /v1/relevance: a reranker's usual depth; bounds latency
    max_inline_products: int = Field(default=32, ge=1)  # inline products run the towers (and image decoding)
    max_embed_queries: int = Field(default=256, ge=1)  # per /v1/embed call
    max_k: int = Field(default=1000, ge=1)  # /v1/search results: deeper lists belong to a batch job
    max_search_candidates: int = Field(default=5000, ge=1)  # index shortlist re-scored by the gate per search
    max_query_chars: int = Field(default=512, ge=1)  # the text tower reads ~48 tokens; longer is abuse or a bug
    max_title_chars: int = Field(default=2000, ge=1)  # inline product text (titles are capped at 1000 on load)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)  # checked before parsing: JSON costs memory
    max_image_bytes: int = Field(default=4 * 1024 * 1024, ge=1)  # decoded base64 size of one inline image
    # Declared width x height, refused before decoding: a few hundred PNG bytes can declare gigapixels.
    max_image_pixels: int = Field(default=24_000_000, ge=1)
    request_timeout_s: float = Field(default=10.0, gt=0)  # a stuck request answers 504 instead of holding a client
    # Requests admitted at once (/v1/*); the next answers 429 at once with Retry-After instead of queueing.
    max_inflight: int = Field(default=32, ge=1)
    retry_after_s: int = Field(default=1, ge=0)  # the Retry-After hint on 429 / 503
    # Threads running model work; 0 = max_inflight (each admitted request gets one, none waits for a thread).
    worker_threads: int = Field(default=0, ge=0)
    # torch / onnxruntime intra-op threads per process; 0 = half of each worker's share of the CPUs (at least 1): the
    # other half runs the event loop, JSON, scoring and concurrent requests. On 2 shared cores one query forward
    # took 32 ms with 1 thread and 158 ms with 2 (spinning thread pools fighting; benchmarks/results/serve_latency.md).
    torch_threads: int = Field(default=0, ge=0)
    # Without --onnx: encode queries with the TorchScript trace of the query path (frozen, oneDNN pre-packed
    # linears; querylife.traced_query), checked against eager PyTorch at load (1e-5). A MiniLM query forward took
    # ~30% less time than eager PyTorch (benchmarks/results/serve_latency.md); false, or a failed trace: eager.
    torchscript: bool = True
    # Name of the environment variable holding the API key (never the key itself, never on the command line);
    # None: no key needed. /healthz, /readyz and /metrics stay open for probes and scrapers.
    api_key_env: str | None = None
    batcher: BatcherConfig = Field(default_factory=BatcherConfig)


def load_serve_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ServeConfig:
    """Read a YAML/JSON settings file (or the defaults) and apply ``key=value`` overrides (``batcher.max_batch=8``).

    Raises:
        ValueError: naming the file and key of any unknown or invalid setting.
    """
    tree: dict = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            tree = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"cannot read serve config {path}: {err}") from None
        if not isinstance(tree, dict):
            raise ValueError(f"{path}: the top level must be a mapping of settings")
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value")
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    try:
        return ServeConfig.model_validate(tree)
    except ValidationError as err:
        lines = [f"{source}: invalid serve configuration"]
        lines += [f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()]
        raise ValueError("\n".join(lines)) from None
