"""Run the service with uvicorn: one process, or several workers (each loads the model and the store).

Workers are separate processes started by uvicorn from an import string, so the checkpoint, store and settings
reach them through one environment variable (:data:`SPEC_ENV`, JSON; it holds paths and limits, never the API key,
which each worker reads from the variable ``api_key_env`` names).

Example::

    serve("runs/exp1/best", "runs/exp1/store", ServeConfig(), host="127.0.0.1", port=8000, workers=2)
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

from .config import ServeConfig

__all__ = ["SPEC_ENV", "app_from_env", "auto_threads", "configure_process", "serve"]

SPEC_ENV = "QUERYLIFE_SERVE_SPEC"


def configure_process(settings: ServeConfig, workers: int = 1) -> int:
    """Process-wide settings for a serving process: torch threads (``torch_threads``, or half of each worker's
    share of the CPUs, at least one) and PIL's own decompression-bomb limit; returns the torch thread count."""
    import torch
    from PIL import Image

    threads = settings.torch_threads or auto_threads(workers)
    torch.set_num_threads(threads)
    Image.MAX_IMAGE_PIXELS = settings.max_image_pixels  # PIL refuses past twice this, even outside our check
    return threads


def auto_threads(workers: int = 1, cpus: int | None = None) -> int:
    """Intra-op threads per worker when ``torch_threads`` is 0: half of the worker's share of the CPUs, at least 1.

    Example::

        auto_threads(1, cpus=2), auto_threads(1, cpus=16), auto_threads(4, cpus=16)   # (1, 8, 2)
    """
    cpus = cpus or os.cpu_count() or 1
    return max(1, cpus // max(1, workers) // 2)


def app_from_env():
    """uvicorn factory for worker processes: the app described by :data:`SPEC_ENV`."""
    from .app import create_app
    from .service import load_service

    spec = json.loads(os.environ[SPEC_ENV])
    settings = ServeConfig.model_validate(spec["settings"])
    threads = configure_process(settings, spec.get("workers", 1))

    def load():
        encoder = None
        if spec.get("onnx"):
            from ..onnx_export import OnnxQueryEncoder  # the onnx extra

            encoder = OnnxQueryEncoder.for_checkpoint(spec["onnx"], spec["checkpoint"], intra_op_threads=threads)
        service = load_service(spec["checkpoint"], spec["store"], settings, query_encoder=encoder)
        # The model's and the store's ~500k Python objects live as long as the process: a full collection over
        # them took ~0.4 s here (a p99.9 pause whenever enough survivors pile up, e.g. query-cache churn). Frozen,
        # later collections scan only what requests allocate.
        gc.collect()
        gc.freeze()
        if encoder is not None:
            service.info["query_encoder"] = encoder.description  # names the quantisation (int8-dynamic) if any
        return service

    return create_app(settings, loader=load)


def serve(
    checkpoint: str | Path,
    store: str | Path,
    settings: ServeConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str = "info",
    onnx: str | Path | None = None,
) -> None:
    """Serve until interrupted. The model loads in the background: /healthz answers at once, /readyz when loaded.
    ``onnx``: the query encoder exported by ``querylife export-onnx`` (checked to come from ``checkpoint``) encodes
    the queries with onnxruntime instead of PyTorch."""
    import uvicorn

    from .app import _api_key
    from .tcp import NoDelayHTTPProtocol

    _api_key(settings)  # fail before starting anything when the key variable is empty
    spec = {"checkpoint": str(checkpoint), "store": str(store), "settings": settings.model_dump(mode="json"),
            "workers": workers, "onnx": str(onnx) if onnx else None}
    os.environ[SPEC_ENV] = json.dumps(spec)
    uvicorn.run("querylife.serve.run:app_from_env", factory=True, host=host, port=port, workers=workers,
                http=NoDelayHTTPProtocol,  # TCP_NODELAY with --workers too (querylife.serve.tcp)
                log_level=log_level, timeout_graceful_shutdown=5,
                access_log=log_level in ("trace", "debug", "info"))  # access lines are info: skip their calls above
