"""The PyTorch query path traced with TorchScript, frozen and optimised for inference: the service's default query
encoder when no ONNX graph is given.

Serving encodes one short query per request, where eager PyTorch spends much of a MiniLM forward in Python
(module calls, transformers' mask and attention dispatch) and in unpacked GEMMs over 6-token inputs. Tracing the
same module that ONNX export uses (:class:`querylife.onnx_export.QueryTowerModule`: tower, pooling, query head,
L2 normalisation), freezing it and ``torch.jit.optimize_for_inference`` (constant folding, weights pre-packed for
oneDNN) removes both; the vectors stay those of ``model.encode_queries`` to float32 rounding, which is checked when
the encoder is built (:data:`CHECK_QUERIES`: one query, a padded batch, a query longer than ``max_length``).
Tokenisation is the tower's own (``TextTower.tokenize``), so batch and sequence sizes stay dynamic.

Example::

    encoder = TracedQueryEncoder(model)                  # raises TraceError when the trace does not match
    q = encoder(["red striped sofa"])                     # (1, D) float32 unit rows, as model.encode_queries
    searcher = Searcher(model, products, index, query_encoder=encoder)
"""

from __future__ import annotations

import warnings

import torch

from .model import QueryLifeModel
from .onnx_export import CHECK_QUERIES, TRACE_EXAMPLE, parity, query_tower_module

__all__ = ["TraceError", "TracedQueryEncoder"]


class TraceError(RuntimeError):
    """The query path could not be traced, or the trace does not reproduce ``model.encode_queries``."""


class TracedQueryEncoder:
    """``encode(texts) -> (B, D)`` float32 unit query vectors from a frozen TorchScript trace of the query path.

    Args:
        model: the loaded checkpoint (its query tower, or the text tower when queries share it, and head).
        optimize: also run ``torch.jit.optimize_for_inference`` (oneDNN pre-packed linears); False: frozen only,
            bit-identical to eager on this machine, a little slower.
        tolerance: the largest absolute difference to ``model.encode_queries`` accepted on the check queries.

    Raises:
        TraceError: tracing failed, or the trace differs from eager PyTorch by more than ``tolerance``.
    """

    def __init__(self, model: QueryLifeModel, *, optimize: bool = True, tolerance: float = 1e-5) -> None:
        was_training = model.training
        model.eval()
        try:
            module, tower = query_tower_module(model)
            self.tower = tower
            self.input_names = module.input_names
            self.device = model.device
            self.dim = int(model.config.embed_dim)
            example = self._tensors(TRACE_EXAMPLE)
            try:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # TracerWarnings about Python branches the example pins
                    traced = torch.jit.freeze(torch.jit.trace(module, example, check_trace=False).eval())
                    self.module = torch.jit.optimize_for_inference(traced) if optimize else traced
            except Exception as err:  # noqa: BLE001 - any tracer failure means "use eager PyTorch"
                raise TraceError(f"cannot trace the query tower {tower.name!r}: {type(err).__name__}: {err}") from err
            self.max_abs_diff = self._parity(model)
        finally:
            model.train(was_training)
        if not self.max_abs_diff <= tolerance:
            raise TraceError(f"the traced query tower differs from eager PyTorch by {self.max_abs_diff:.3g} "
                             f"(> {tolerance:g}) on the check queries")
        self.optimized = optimize

    def _tensors(self, texts: list[str]) -> tuple[torch.Tensor, ...]:
        tok = self.tower.tokenize(texts)
        return tuple(tok[n].to(self.device) for n in self.input_names)

    def _parity(self, model: QueryLifeModel) -> float:
        groups = [CHECK_QUERIES[:1], list(CHECK_QUERIES), [" ".join(CHECK_QUERIES * 20)]]  # long: truncated
        return max(parity(model, self, g) for g in groups)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Unit query vectors (B, D) float32 on the CPU (an empty list gives (0, D))."""
        if not texts:
            return torch.empty(0, self.dim)
        with torch.inference_mode():
            return self.module(*self._tensors(list(texts))).float().cpu()  # (B, D)

    __call__ = encode
