"""The query tower as one ONNX graph, and an onnxruntime query encoder that serving uses instead of PyTorch.

At serving time the only model work per request is encoding the query (products come from the embedding store),
so the query path is exported on its own: token ids -> text encoder -> pooling (or a CLIP text half's own
features) -> the query projection head (the title head when queries share it) -> L2 normalisation, exactly what
``QueryLifeModel.encode_queries`` computes. Tokenisation stays in Python (the fast Hugging Face tokenizer, saved
next to the graph so that the runtime needs no hub) and uses the tower's own settings (padding, truncation,
``max_length``), which the graph records in its metadata.

Example::

    from querylife.onnx_export import export_query_encoder, OnnxQueryEncoder

    result = export_query_encoder("runs/exp1/best", "runs/exp1/best/onnx/query_encoder.onnx")
    encoder = OnnxQueryEncoder(result.path, intra_op_threads=1)
    q = encoder.encode(["red striped sofa"])          # (1, D) torch.float32, unit rows

``quantize="int8"`` also writes ``query_encoder.int8.onnx`` beside it: the same graph with its weights dynamically
quantised to int8 (onnxruntime.quantization), about 2x faster per query on CPU, at a measured quality cost
(docs/SERVING.md). It is an opt-in: only the fp32 graph gives the scores ``querylife eval`` gives.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .atomic import atomic_write_bytes
from .model import QueryLifeModel
from .store import checkpoint_hash
from .towers import TextTower, _features

__all__ = [
    "DEFAULT_MIN_COSINE",
    "DEFAULT_NAME",
    "QUANTIZATIONS",
    "ExportResult",
    "OnnxQueryEncoder",
    "Parity",
    "QuantizedExport",
    "QueryTowerModule",
    "export_query_encoder",
    "fp32_nodes",
    "parity",
    "parity_stats",
    "quantize_query_encoder",
    "quantized_path",
    "quiet_export",
]

DEFAULT_NAME = "query_encoder.onnx"
OUTPUT_NAME = "query_vectors"
# Keys of the graph's metadata_props; the runtime reads its tokenizer settings from them.
META_PREFIX = "querylife."
# --quantize choices -> the graph's querylife.quantization metadata ("none" when absent: every fp32 export)
QUANTIZATIONS = {"none": "none", "int8": "int8-dynamic"}
# A quantised export fails below this cosine to encode_queries on a check query. Measured min over the 4 check
# queries (benchmarks/results/onnx_int8.md): 0.988-0.991 on 15 trained checkpoints (3 storefronts x 5 seeds) and on
# untrained all-MiniLM-L6-v2 heads with the chosen setting; 0.905-0.93 with per-tensor weight scales (about twice
# the dev NDCG@10 cost on demo). 0.98 passes the first with margin and refuses damage of the second kind.
DEFAULT_MIN_COSINE = 0.98
EXTRA_HINT = 'ONNX export and inference need the onnx extra: pip install "querylife[onnx]"'


def _require(module: str):
    """Import an optional dependency, or fail naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{EXTRA_HINT} ({module} is not installed)") from err


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Hide the exporters' progress lines and tracer warnings (a command's output is its result)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


class QueryTowerModule(nn.Module):
    """Token tensors -> unit query vectors (B, D): the query tower, its pooling and the query head.

    ``input_names`` are the tokenizer's tensors in the order the graph takes them (e.g. ``input_ids``,
    ``token_type_ids``, ``attention_mask`` for BERT); ``attention_mask`` must be one of them for mean pooling.
    """

    def __init__(self, tower: TextTower, head: nn.Linear, input_names: list[str]):
        super().__init__()
        if not tower.is_clip and tower.pooling == "mean" and "attention_mask" not in input_names:
            raise ValueError(f"mean pooling needs the tokenizer's attention_mask; it gives only {input_names}")
        self.encoder = tower.model
        self.is_clip = tower.is_clip
        self.pooling = tower.pooling
        self.head = head
        self.input_names = list(input_names)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        tok = dict(zip(self.input_names, tensors, strict=True))
        if self.is_clip:
            feats = _features(self.encoder.get_text_features(**tok))  # (B, dim)
        else:
            hidden = self.encoder(**tok).last_hidden_state  # (B, L, H)
            if self.pooling == "cls":
                feats = hidden[:, 0]
            else:  # the same arithmetic as TextTower.forward, so the two agree to float rounding
                mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
                feats = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, H)
        return F.normalize(self.head(feats), dim=-1)  # (B, D)


def query_tower_module(model: QueryLifeModel) -> tuple[QueryTowerModule, TextTower]:
    """The query path of ``model`` as one module (the tower ``encode_queries`` uses, and its head)."""
    tower = model.query_tower if model.query_tower is not None else model.text_tower
    head = model.query_proj if model.query_proj is not None else model.title_proj
    names = list(tower.tokenize(["a"]).keys())
    return QueryTowerModule(tower, head, names).eval(), tower


@dataclass
class ExportResult:
    """What ``export_query_encoder`` wrote: the graph, its folder (tokenizer files too) and how it was made."""

    path: Path
    directory: Path
    exporter: str  # "dynamo" | "legacy"
    opset: int
    embed_dim: int
    input_names: list[str]
    max_abs_diff: float  # against encode_queries on the check queries
    check_queries: list[str]
    min_cosine: float = 1.0  # against encode_queries on the check queries
    quantized: QuantizedExport | None = None  # the int8 graph of ``quantize="int8"``, None without


@dataclass
class Parity:
    """How far an encoder's query vectors are from ``model.encode_queries``'s on some queries."""

    max_abs_diff: float  # largest |difference| of any coordinate
    min_cosine: float  # smallest cosine between a query's two vectors


@dataclass
class QuantizedExport:
    """The quantised graph ``export_query_encoder(..., quantize="int8")`` wrote next to the fp32 one."""

    path: Path
    quantization: str  # the graph's querylife.quantization metadata, e.g. "int8-dynamic"
    max_abs_diff: float  # against encode_queries on the check queries
    min_cosine: float  # against encode_queries on the check queries
    min_cosine_bound: float  # the export failed below this
    excluded_nodes: list[str]  # nodes kept in fp32 (embedding tables, query head: fp32_nodes)


CHECK_QUERIES = ["red striped dress", "usb c power bank 20000 mah fast charging for phone", "a", "sofa"]
# Example input for tracing / export: a padded batch of different lengths, so no shape is specialised to a constant.
TRACE_EXAMPLE = ["red striped summer dress with pockets", "usb c cable"]
QUANT_PER_CHANNEL = True  # per-tensor weight scales: min cosine 0.88 on trained checkpoints (quantize_query_encoder)


def _export_proto(module: QueryTowerModule, tower: TextTower, *, exporter: str, opset: int | None):
    """torch.onnx.export of ``module`` with dynamic batch and sequence axes -> ModelProto."""
    onnx = _require("onnx")
    tok = tower.tokenize(TRACE_EXAMPLE)
    args = tuple(tok[n] for n in module.input_names)
    if exporter == "dynamo":
        _require("onnxscript")
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
        shapes = tuple({0: batch, 1: seq} for _ in args)
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            input_names=module.input_names,
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_shapes=(shapes,),  # one entry per forward parameter: *tensors
            verbose=False,
        )
        return program.model_proto
    if exporter == "legacy":
        buffer = io.BytesIO()
        axes = {n: {0: "batch", 1: "sequence"} for n in module.input_names}
        torch.onnx.export(
            module,
            args,
            buffer,
            dynamo=False,
            input_names=module.input_names,
            output_names=[OUTPUT_NAME],
            dynamic_axes={**axes, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset or 17,
        )
        return onnx.load_from_string(buffer.getvalue())
    raise ValueError(f"exporter must be 'dynamo' or 'legacy', not {exporter!r}")


def export_query_encoder(
    checkpoint: str | Path | QueryLifeModel,
    out: str | Path,
    *,
    opset: int | None = None,
    exporter: str = "dynamo",
    tolerance: float = 1e-4,
    quantize: str = "none",
    quantized_out: str | Path | None = None,
    min_cosine: float = DEFAULT_MIN_COSINE,
) -> ExportResult:
    """Export the query tower + query head of a checkpoint (or a loaded model) to ``out`` (an ``.onnx`` file).

    The tokenizer is saved into the same folder. Every file is written atomically, the graph last, so a reader
    that finds the graph finds a complete export. After writing, the graph is run with onnxruntime on a few
    queries and compared with ``model.encode_queries``; a difference above ``tolerance`` raises ``ValueError``.

    ``exporter``: "dynamo" (``torch.onnx.export(dynamo=True)``, the default of current PyTorch) or "legacy" (the
    TorchScript exporter). ``opset``: None lets the exporter choose.

    ``quantize="int8"``: then also write the dynamically quantised graph (:func:`quantize_query_encoder`) to
    ``quantized_out`` (default: ``out`` with ``.int8.onnx``); it fails, naming the file, when its vectors' cosine to
    ``encode_queries`` falls below ``min_cosine`` on a check query (``tolerance`` bounds the fp32 graph only).

    Example::

        result = export_query_encoder("runs/exp1/best", "runs/exp1/best/onnx/query_encoder.onnx")
        print(result.max_abs_diff)   # e.g. 2e-07
        result = export_query_encoder("runs/exp1/best", "runs/exp1/best/onnx/query_encoder.onnx", quantize="int8")
        print(result.quantized.path, result.quantized.min_cosine)   # ...query_encoder.int8.onnx 0.99...
    """
    onnx = _require("onnx")
    _require("onnxruntime")
    digest = None
    if isinstance(checkpoint, QueryLifeModel):
        model = checkpoint
    else:
        model = QueryLifeModel.from_pretrained(checkpoint)
        digest = checkpoint_hash(checkpoint)
    was_training = model.training
    model.eval()
    out = Path(out)
    if out.suffix != ".onnx":
        raise ValueError(f"--out must name an .onnx file, not {out}")
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, not {quantize!r}")
    qout = Path(quantized_out) if quantized_out is not None else quantized_path(out)
    if quantize != "none" and (qout.suffix != ".onnx" or qout.resolve() == out.resolve()):
        raise ValueError(f"the quantised graph needs its own .onnx file, not {qout}")
    try:
        module, tower = query_tower_module(model)
        with torch.no_grad():
            proto = _export_proto(module, tower, exporter=exporter, opset=opset)
    finally:
        model.train(was_training)
    padding = "max_length" if "siglip" in type(tower.model).__name__.lower() else "longest"
    meta = {
        "format": "querylife-query-encoder/1",
        "embed_dim": str(model.config.embed_dim),
        "max_length": str(tower.max_length),
        "padding": padding,
        "input_names": json.dumps(module.input_names),
        "text_model": str(tower.name),
        "pooling": "clip" if tower.is_clip else tower.pooling,
        "checkpoint_sha256": digest or "",
        "exporter": exporter,
        "torch": torch.__version__,
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, value
    onnx.checker.check_model(proto)
    opset_used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), -1)
    data = proto.SerializeToString()

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tokenizer.", suffix=".tmp", dir=out.parent))
    try:
        tower.tokenizer.save_pretrained(tmp)
        for path in sorted(tmp.iterdir()):
            os.replace(path, out.parent / path.name)  # same filesystem: each file appears whole
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_bytes(out, data)

    encoder = OnnxQueryEncoder(out)
    check = parity_stats(model, encoder, CHECK_QUERIES)
    diff = check.max_abs_diff
    if not diff <= tolerance:
        raise ValueError(
            f"{out}: the ONNX graph differs from PyTorch by {diff:.3g} (> {tolerance:g}) on the check queries"
        )
    quantized = None
    if quantize != "none":
        quantized = quantize_query_encoder(out, qout, model=model, min_cosine=min_cosine)
    return ExportResult(
        out,
        out.parent,
        exporter,
        opset_used,
        model.config.embed_dim,
        module.input_names,
        diff,
        list(CHECK_QUERIES),
        check.min_cosine,
        quantized,
    )


def quantized_path(out: str | Path, quantization: str = "int8") -> Path:
    """Where the quantised graph of ``out`` goes by default: ``query_encoder.onnx`` -> ``query_encoder.int8.onnx``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.{quantization}.onnx")


def fp32_nodes(graph) -> list[str]:
    """The nodes an int8 export keeps in fp32: the embedding tables' Gathers and the query head.

    The head is the last node that multiplies by a weight (Gemm / MatMul with an initializer operand): every tower
    ends encoder -> pooling -> head -> L2 normalisation (the normalisation has no weights, so it stays fp32 anyway;
    so does a Gemm head, which dynamic quantisation does not cover, but a CLIP text projection is a MatMul). The
    embedding Gathers read a few table rows per query, so int8 tables make the file smaller, not the forward faster,
    and they cost parity (benchmarks/results/onnx_int8.md).
    """
    weights = {init.name for init in graph.initializer}
    linear = [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul") and any(i in weights for i in n.input)]
    tables = [n.name for n in graph.node if n.op_type == "Gather" and any(i in weights for i in n.input)]
    return tables + linear[-1:]


def quantize_query_encoder(
    src: str | Path,
    dst: str | Path,
    *,
    model: QueryLifeModel,
    min_cosine: float = DEFAULT_MIN_COSINE,
    queries: list[str] | None = None,
) -> QuantizedExport:
    """Write ``src`` (an fp32 export) with its weights dynamically quantised to int8, to ``dst`` (atomically),
    after checking it against ``model.encode_queries`` on ``queries`` (default: the export's check queries).

    Dynamic quantisation (``onnxruntime.quantization.quantize_dynamic``): int8 weights, activations quantised per
    call from their own range; the encoder's MatMuls are quantised, so a one-query forward reads ~4x fewer weight
    bytes (it is bound by memory bandwidth). Per-channel weight scales; the embedding tables and the query head
    stay fp32 (:func:`fp32_nodes`). Chosen on 5 trained demo checkpoints, 600 queries each, by parity (min cosine
    to the fp32 vectors; benchmarks/results/onnx_int8.md): per-tensor scales 0.88, per-channel 0.96, per-channel
    with fp32 embedding tables 0.98 at the same speed (int8 tables only shrink the file: 23 against 59 MB). Keeping
    the FFN output layers fp32 too reached 0.99 but gave back a third of the time saved (forward x0.67 of fp32's
    instead of x0.50), so it is not the default.
    The graph keeps the fp32 export's metadata (tokenizer settings, checkpoint hash) and adds
    ``querylife.quantization=int8-dynamic``. Raises ``ValueError`` naming ``dst`` (nothing is written) when the
    smallest cosine falls below ``min_cosine``.

    Example::

        q = quantize_query_encoder("best/onnx/query_encoder.onnx", "best/onnx/query_encoder.int8.onnx", model=model)
        q.min_cosine, q.max_abs_diff     # e.g. 0.99, 0.03
    """
    onnx = _require("onnx")
    _require("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    base = onnx.load(str(src))
    excluded = fp32_nodes(base.graph)
    dst.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a "consider pre-processing" warning on every call
    try:
        with tempfile.TemporaryDirectory(prefix=".quantize.", dir=dst.parent) as tmp:
            scratch = Path(tmp) / "q.onnx"
            quantize_dynamic(
                base, scratch, weight_type=QuantType.QInt8, per_channel=QUANT_PER_CHANNEL, nodes_to_exclude=excluded
            )
            proto = onnx.load(str(scratch))
    finally:
        root.setLevel(level)
    meta = {e.key: e.value for e in base.metadata_props}
    meta[META_PREFIX + "quantization"] = QUANTIZATIONS["int8"]
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    data = proto.SerializeToString()

    check = parity_stats(model, OnnxQueryEncoder(src).with_graph(data), queries or CHECK_QUERIES)
    if not check.min_cosine >= min_cosine:
        raise ValueError(
            f"{dst}: not written: the int8 graph's query vectors reach cosine {check.min_cosine:.4f} to PyTorch's "
            f"(< {min_cosine:g}, --min-cosine) on the check queries; serve the fp32 graph"
        )
    atomic_write_bytes(dst, data)
    return QuantizedExport(
        dst, QUANTIZATIONS["int8"], check.max_abs_diff, check.min_cosine, min_cosine, list(excluded)
    )


def parity(model: QueryLifeModel, encoder: Any, queries: list[str]) -> float:
    """Max absolute difference between ``model.encode_queries`` and ``encoder.encode`` (the ONNX or the traced
    query encoder) on ``queries``."""
    return parity_stats(model, encoder, queries).max_abs_diff


@torch.no_grad()
def parity_stats(model: QueryLifeModel, encoder: Any, queries: list[str]) -> Parity:
    """Max absolute difference and min cosine between ``model.encode_queries`` and ``encoder.encode`` on
    ``queries`` (what a quantised graph is judged by: its vectors are close in direction, not to 1e-4).

    Example::

        p = parity_stats(model, OnnxQueryEncoder("best/onnx/query_encoder.int8.onnx"), ["red dress"])
        p.min_cosine    # e.g. 0.995
    """
    was_training = model.training
    model.eval()
    try:
        ref = model.encode_queries(queries).float().cpu()  # (B, D)
    finally:
        model.train(was_training)
    got = encoder.encode(queries).float()  # (B, D)
    cosine = F.cosine_similarity(got, ref, dim=-1)  # (B,)
    return Parity(float((got - ref).abs().max()), float(cosine.min()))


class OnnxQueryEncoder:
    """onnxruntime query encoder: ``encode(texts) -> (B, D)`` float32 unit vectors, as ``model.encode_queries``.

    Callable (``encoder(texts)`` is ``encoder.encode(texts)``), so it can be passed wherever a query encoder is
    taken (``search.Searcher(..., query_encoder=...)``, the service). Runs on onnxruntime's CPU execution provider;
    ``intra_op_threads`` bounds its threads (0: onnxruntime's default, one per core).

    Example::

        encoder = OnnxQueryEncoder("runs/exp1/best/onnx/query_encoder.onnx", intra_op_threads=2)
        q = encoder(["red striped sofa", "usb c cable"])     # torch.Size([2, 256])
    """

    def __init__(self, path: str | Path, *, intra_op_threads: int = 1, inter_op_threads: int = 1):
        ort = _require("onnxruntime")
        from transformers import AutoTokenizer

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no ONNX query encoder here (querylife export-onnx writes one)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._options = options
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self._read_metadata()
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path.parent))

    def _read_metadata(self) -> None:
        props = self.session.get_modelmeta().custom_metadata_map
        meta = {k.removeprefix(META_PREFIX): v for k, v in props.items() if k.startswith(META_PREFIX)}
        if not meta.get("format", "").startswith("querylife-query-encoder/"):
            raise ValueError(f"{self.path} is not a querylife query encoder (no {META_PREFIX}format metadata)")
        self.metadata = meta
        self.dim = int(meta["embed_dim"])
        self.max_length = int(meta["max_length"])
        self.padding: bool | str = "max_length" if meta["padding"] == "max_length" else True
        self.input_names = json.loads(meta["input_names"])
        self.checkpoint_sha256 = meta.get("checkpoint_sha256") or None
        # "none" (fp32: the scores `querylife eval` gives) or "int8-dynamic" (export-onnx --quantize int8; activations
        # are quantised with the range of the whole call, so encode() runs such a graph one text at a time)
        self.quantization = meta.get("quantization", "none")
        graph_inputs = [i.name for i in self.session.get_inputs()]
        self._feed_names = [n for n in self.input_names if n in graph_inputs]  # an unused input may be pruned

    @property
    def batches(self) -> bool:
        """Whether one forward over many queries is cheaper than one each (fp32); an int8 graph encodes each query
        on its own (:meth:`encode`), so the service does not micro-batch for it."""
        return self.quantization == "none"

    @property
    def description(self) -> str:
        """What the service's /readyz names as its query encoder, e.g. ``onnxruntime int8-dynamic (FILE)``."""
        kind = "onnxruntime" if self.quantization == "none" else f"onnxruntime {self.quantization}"
        return f"{kind} ({self.path})"

    def with_graph(self, data: bytes) -> OnnxQueryEncoder:
        """A copy running the serialised graph ``data`` with this encoder's tokenizer and session options (an
        export checks a graph this way before writing it)."""
        ort = _require("onnxruntime")
        other = copy.copy(self)
        other.session = ort.InferenceSession(data, self._options, providers=["CPUExecutionProvider"])
        other._read_metadata()
        return other

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Unit query vectors (B, D) for ``texts`` (an empty list gives (0, D)).

        A dynamically quantised graph takes its activations' int8 ranges from the whole input, so in a batch a
        query's vector would depend on the queries beside it (cosine down to 0.957 against the same query alone,
        benchmarks/results/onnx_int8.md): such a graph encodes each text on its own, and a query always gets the
        same vector, whether the service's micro-batcher grouped it or not.
        """
        if not texts:
            return torch.empty(0, self.dim)
        if self.quantization != "none" and len(texts) > 1:
            return torch.cat([self.encode([text]) for text in texts])  # (B, D)
        tok = self.tokenizer(
            list(texts), padding=self.padding, truncation=True, max_length=self.max_length, return_tensors="np"
        )
        feed = {n: tok[n].astype("int64") for n in self._feed_names}
        (out,) = self.session.run([OUTPUT_NAME], feed)  # (B, D)
        return torch.from_numpy(out)

    __call__ = encode

    @classmethod
    def for_checkpoint(
        cls, path: str | Path, checkpoint: str | Path, *, intra_op_threads: int = 1
    ) -> OnnxQueryEncoder:
        """Open ``path`` and check that it was exported from ``checkpoint`` (what a service loading both needs).

        Example::

            encoder = OnnxQueryEncoder.for_checkpoint("runs/exp1/best/onnx/query_encoder.onnx", "runs/exp1/best")
            searcher = Searcher(model, products, index, query_encoder=encoder)
        """
        encoder = cls(path, intra_op_threads=intra_op_threads)
        encoder.check_checkpoint(checkpoint)
        return encoder

    def check_checkpoint(self, checkpoint: str | Path) -> None:
        """Raise ``ValueError`` unless this graph was exported from ``checkpoint`` (same config and weights; the
        hash is :func:`querylife.store.checkpoint_hash`, the one an embedding store's manifest records)."""
        if self.checkpoint_sha256 is None:
            raise ValueError(f"{self.path} does not record the checkpoint it came from; export it again")
        actual = checkpoint_hash(checkpoint)
        if actual != self.checkpoint_sha256:
            raise ValueError(
                f"{self.path} was exported from another checkpoint (sha256 {self.checkpoint_sha256[:12]}, "
                f"{checkpoint} has {actual[:12]}): run querylife export-onnx --checkpoint {checkpoint}"
            )
