"""The Query-LIFE model: towers + projection heads + fusion + temperature, with typed outputs.

Data flow (shapes for a batch of B (query, product) pairs, D = ``embed_dim``)::

    query  ─► query/text tower ─► (B, d_t) ─► query projection ─► q (B, D), unit norm
    title  ─► text tower       ─► (B, d_t) ─► title projection ─► t (B, D), unit norm
    image  ─► vision tower     ─► (B, d_v) ─► image projection ─► v (B, D), unit norm (zeros if no image)
    fusion(q, t, v, type) ─► scores (B, B) and image weights (B, B)

Towers can be bypassed by passing precomputed tower features: a frozen tower's features never change, so the
training loop computes them once (``features`` arguments below) and only the heads run per step.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import load_file, save_file
from torch import nn

from .compat import removed_options_validator
from .fusion import Fusion, FusionConfig, FusionOutput
from .losses import Embeddings
from .query_offset import QueryOffset, QueryOffsetConfig
from .towers import TextTower, TowerConfig, VisionTower, build_towers

UNKNOWN_TYPE = "<unk>"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class ModelConfig(BaseModel):
    """Everything needed to rebuild the model (saved as config.json next to the weights)."""

    model_config = ConfigDict(extra="forbid")
    tower: TowerConfig = Field(default_factory=TowerConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    # Scores minus a dev-chosen share of each query's offset (its best reference matches), fitted after training:
    # same rankings, another footing across queries (querylife.query_offset; docs/TUNING.md).
    query_offset: QueryOffsetConfig = Field(default_factory=QueryOffsetConfig)
    embed_dim: int = 256  # shared space of q, t, v; small keeps serving matrices cheap
    init_temperature: float = 0.05  # CLIP uses 0.07; frozen sentence encoders give tighter cosines
    learn_temperature: bool = True
    max_logit_scale: float = 100.0  # CLIP's clamp: prevents the temperature from collapsing
    # False: queries share the title head, which keeps a frozen tower's query-title geometry (docs/TUNING.md).
    separate_query_projection: bool = False
    init_logit_bias: float = -5.0  # sigmoid loss only: starts with a low prior of any pair being positive
    # Product-type vocabulary, filled from the training catalogue; index 0 is reserved for unseen types.
    product_types: list[str] = Field(default_factory=list)
    # Options removed since earlier versions: dropped at their old default, an error otherwise (querylife.compat).
    _removed = removed_options_validator("model")


# The optimiser groups of QueryLifeModel.parameter_groups that hold the gate (held at their init for the first
# train.gate_start_fraction of training).
GATE_GROUPS = ("gate", "gate_net")


@dataclass
class QueryLifeOutput:
    """Forward pass over a batch of B positive pairs (diagonal = positives).

    q, t, v: (B, D) unit vectors (v is zero where the product has no image).
    scores: (B, B) query x fused-product scores; image_weight: (B, B) gate weights (None for concat).
    sims: the similarity matrices the losses use ("query_fused", "query_title", "query_image", "title_image").
    """

    q: torch.Tensor
    t: torch.Tensor
    v: torch.Tensor
    scores: torch.Tensor
    image_weight: torch.Tensor | None
    sims: dict[str, torch.Tensor]
    logit_scale: torch.Tensor
    logit_bias: torch.Tensor


def _orthogonal_head(d_in: int, d_out: int) -> nn.Linear:
    # An orthogonal init preserves the tower's cosine geometry at step 0 (exactly when d_out >= d_in), so training
    # starts from the pretrained encoder's zero-shot ranking instead of a random projection of it.
    head = nn.Linear(d_in, d_out, bias=False)
    nn.init.orthogonal_(head.weight)
    return head


class QueryLifeModel(nn.Module):
    """Query-aware multimodal relevance model.

    Example::

        model = QueryLifeModel(ModelConfig(product_types=["dress", "charger"]))
        q = model.encode_queries(["red dress"])                       # (1, D)
        t = model.encode_titles(["Summer dress"]); v = model.encode_images(images, has_image)
        out = model.score(q, t, v, model.type_ids(["dress"]), has_image, pairwise=True)
    """

    def __init__(
        self, config: ModelConfig, towers: tuple[TextTower, TextTower | None, VisionTower | None] | None = None
    ):
        super().__init__()
        self.config = config
        # Pre-built towers (e.g. a frozen text tower shared by the runs of an ablation suite) are used as given;
        # a missing vision tower is built here, so its init follows the caller's seed and not the run order.
        self.text_tower, self.query_tower, vision = towers or build_towers(config.tower)
        self.vision_tower = vision if vision is not None else VisionTower(config.tower)
        d = config.embed_dim
        self.title_proj = _orthogonal_head(self.text_tower.dim, d)
        q_dim = (self.query_tower or self.text_tower).dim
        own_head = config.separate_query_projection or self.query_tower is not None  # another tower: other features
        self.query_proj = _orthogonal_head(q_dim, d) if own_head else None
        if self.query_proj is not None and self.query_tower is None:
            self.query_proj.weight.data.copy_(self.title_proj.weight.data)  # same start, free to diverge
        self.image_proj = nn.Linear(self.vision_tower.dim, d)
        self.types = [UNKNOWN_TYPE, *[t for t in config.product_types if t != UNKNOWN_TYPE]]
        self._type_index = {t: i for i, t in enumerate(self.types)}
        self.fusion = Fusion(config.fusion, n_types=len(self.types), dim=d)
        if config.query_offset.mode != "none":
            self.query_offset = QueryOffset(config.query_offset, dim=d)  # empty (offsets 0) until fitted
        scale = torch.tensor(math.log(1.0 / config.init_temperature))
        self.log_logit_scale = nn.Parameter(scale, requires_grad=config.learn_temperature)
        self.logit_bias = nn.Parameter(torch.tensor(config.init_logit_bias))

    # ---- helpers ----------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.log_logit_scale.device

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.exp().clamp(max=self.config.max_logit_scale)

    def train(self, mode: bool = True) -> QueryLifeModel:
        super().train(mode)
        # Frozen towers stay in eval mode: dropout / batch-norm updates there would change "frozen" features.
        for tower in (self.text_tower, self.query_tower, self.vision_tower):
            if tower is not None and tower.frozen:
                tower.eval()
        return self

    def type_ids(self, types: list[str]) -> torch.Tensor:
        """Product-type names -> ids; unseen types map to the reserved unknown id 0."""
        idx = [self._type_index.get(str(t).strip().lower(), 0) for t in types]
        return torch.tensor(idx, dtype=torch.long, device=self.device)

    # ---- towers -----------------------------------------------------------------------------------------
    def text_features(self, texts: list[str], *, role: str = "title") -> torch.Tensor:
        """Raw tower features (B, d_t) for titles or queries (role="query" uses the query tower if separate)."""
        tower = self.query_tower if (role == "query" and self.query_tower is not None) else self.text_tower
        with torch.set_grad_enabled(torch.is_grad_enabled() and not tower.frozen):
            return tower(texts)

    def image_features(self, images: torch.Tensor, has_image: torch.Tensor | None = None) -> torch.Tensor:
        """Raw vision features (B, d_v) from uint8 images (B, 3, S, S); zeros (no tower work) where no image."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.vision_tower.frozen):
            if has_image is None or bool(has_image.all()):
                return self.vision_tower(images.to(self.device))
            # Text-only catalogues (and products without photos) skip the vision tower instead of encoding blanks.
            idx = has_image.to(self.device).nonzero().squeeze(-1)  # (n_with_image,)
            out = torch.zeros(images.shape[0], self.vision_tower.dim, device=self.device)
            if idx.numel():
                out = out.index_copy(0, idx, self.vision_tower(images.to(self.device)[idx]).to(out.dtype))
            return out

    # ---- heads ------------------------------------------------------------------------------------------
    def project_queries(self, features: torch.Tensor) -> torch.Tensor:
        head = self.query_proj or self.title_proj
        return F.normalize(head(features.to(self.device)), dim=-1)  # (B, D)

    def project_titles(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.title_proj(features.to(self.device)), dim=-1)  # (B, D)

    def project_images(self, features: torch.Tensor, has_image: torch.Tensor) -> torch.Tensor:
        v = F.normalize(self.image_proj(features.to(self.device)), dim=-1)  # (B, D)
        return v * has_image.to(self.device, v.dtype).unsqueeze(-1)  # no image -> zero vector, gate weight 0

    def encode_queries(self, texts: list[str]) -> torch.Tensor:
        return self.project_queries(self.text_features(texts, role="query"))

    def encode_titles(self, texts: list[str]) -> torch.Tensor:
        return self.project_titles(self.text_features(texts))

    def encode_images(self, images: torch.Tensor, has_image: torch.Tensor) -> torch.Tensor:
        return self.project_images(self.image_features(images, has_image), has_image)

    # ---- scoring ----------------------------------------------------------------------------------------
    def score(self, q, t, v, type_ids, has_image, *, pairwise: bool) -> FusionOutput:
        """Fused relevance scores: (Bq, Bp) when ``pairwise`` else row-aligned (N,). In eval mode, products without
        a photo get their type's typical photo vector once it is fitted (``model.fusion.missing_image``), and each
        query's offset is subtracted once fitted (``model.query_offset``): the ranking of every query is unchanged,
        its scores sit relative to its best reference matches."""
        out = self._fused(q, t, v, type_ids, has_image, pairwise=pairwise)
        offset = self.offsets(q, pairwise=pairwise)
        if offset is None:
            return out
        shift = offset.unsqueeze(-1) if pairwise else offset  # (Bq, 1) or (N,)
        return FusionOutput(out.scores - shift.to(out.scores.dtype), out.image_weight)

    def offsets(self, q: torch.Tensor, *, pairwise: bool = True) -> torch.Tensor | None:
        """Each query's score offset ((Bq,), or (N,) for row-aligned pairs whose query rows repeat), or None when
        nothing is subtracted: in training, without ``model.query_offset``, before it is fitted, or at strength 0."""
        module = getattr(self, "query_offset", None)
        if self.training or module is None or not module.active:
            return None
        return module.offsets(q, self.fusion) if pairwise else module.paired_offsets(q, self.fusion)

    def _fused(self, q, t, v, type_ids, has_image, *, pairwise: bool) -> FusionOutput:
        """The fusion's scores without the query offset (what the training loss compares)."""
        has_image = has_image.to(self.device)
        if not self.training:  # training never fills (the vectors are fitted after it): no per-step check or sync
            v, has_image = self.fusion.fill_missing(v, type_ids, has_image)  # (Bp, D), (Bp,)
        fn = self.fusion.pairwise if pairwise else self.fusion.paired
        return fn(q, t, v, type_ids, has_image)

    def embed(
        self,
        *,
        type_ids: torch.Tensor,
        has_image: torch.Tensor,
        queries: list[str] | None = None,
        titles: list[str] | None = None,
        images: torch.Tensor | None = None,
        query_features: torch.Tensor | None = None,
        title_features: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
    ) -> Embeddings:
        """The unit vectors of a batch (what the training loss compares): raw texts / pixels, or tower features where
        they are cached. Queries (Bq,) and products (Bp,) may differ in number (extra negative columns)."""
        qf = query_features if query_features is not None else self.text_features(queries, role="query")
        tf = title_features if title_features is not None else self.text_features(titles)
        vf = image_features if image_features is not None else self.image_features(images, has_image)
        q, t = self.project_queries(qf), self.project_titles(tf)  # (Bq, D), (Bp, D)
        v = self.project_images(vf, has_image)  # (Bp, D)
        return Embeddings(q, t, v, type_ids, has_image.to(self.device))

    def forward(
        self,
        *,
        type_ids: torch.Tensor,
        has_image: torch.Tensor,
        queries: list[str] | None = None,
        titles: list[str] | None = None,
        images: torch.Tensor | None = None,
        query_features: torch.Tensor | None = None,
        title_features: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
    ) -> QueryLifeOutput:
        """Encode a batch of B positive pairs and score every query against every product."""
        emb = self.embed(
            type_ids=type_ids,
            has_image=has_image,
            queries=queries,
            titles=titles,
            images=images,
            query_features=query_features,
            title_features=title_features,
            image_features=image_features,
        )
        q, t, v = emb.q, emb.t, emb.v
        fused = self._fused(q, t, v, type_ids, has_image, pairwise=True)  # no query offset: the loss's own scores
        sims = {"query_fused": fused.scores, "query_title": q @ t.T, "query_image": q @ v.T, "title_image": t @ v.T}
        return QueryLifeOutput(q, t, v, fused.scores, fused.image_weight, sims, self.logit_scale, self.logit_bias)

    # ---- persistence ------------------------------------------------------------------------------------
    def _frozen_prefixes(self) -> list[str]:
        """Frozen pretrained towers are not copied into checkpoints: config.json names their source. Of a partly
        trained EfficientNet-Lite only the trained blocks are saved."""
        out = []
        for name in ("text_tower", "query_tower"):
            tower = getattr(self, name)
            if tower is not None and tower.frozen:
                out.append(name + ".")
        out += [f"vision_tower.{p}" for p in self.vision_tower.frozen_state_prefixes()]
        return out

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        skip = self._frozen_prefixes()
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if not k.startswith(tuple(skip))}

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``model.safetensors`` + ``config.json`` into ``directory`` (the caller makes it atomic)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.config.model_copy(update={"product_types": self.types[1:]})
        save_file(self.trainable_state_dict(), str(directory / WEIGHTS_NAME))
        (directory / CONFIG_NAME).write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, map_location: str = "cpu") -> QueryLifeModel:
        """Load a checkpoint directory written by ``save_pretrained`` (safetensors + JSON only, no pickle)."""
        directory = Path(directory)
        cfg_path = directory / CONFIG_NAME
        if not cfg_path.exists():
            raise FileNotFoundError(f"{directory} is not a querylife checkpoint: {CONFIG_NAME} is missing")
        try:
            raw = json.loads(cfg_path.read_text())
            if isinstance(raw.get("fusion"), dict):  # written before the option: photo-less products were title-only
                raw["fusion"].setdefault("missing_image", "title")
            raw.setdefault("query_offset", {"mode": "none"})  # written before the option: raw fused scores
            raw["query_offset"].setdefault("strength", 1.0)  # written before the strength: top_k was the full offset
            config = ModelConfig.model_validate(raw)
        except ValidationError as err:  # e.g. an option removed since the checkpoint was written
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg'].removeprefix('Value error, ')}"
                for e in err.errors()
            )
            raise ValueError(f"{cfg_path}: cannot load the model config: {problems}") from None
        model = cls(config)
        state = load_file(str(directory / WEIGHTS_NAME), device=map_location)
        missing, unexpected = model.load_state_dict(state, strict=False)
        frozen = tuple(model._frozen_prefixes())
        # a top_k checkpoint written before the strength existed: the buffer's init (1.0, from the config above)
        missing = [k for k in missing if not k.startswith(frozen) and k != "query_offset.strength"]
        if missing or unexpected:
            raise ValueError(
                f"checkpoint {directory} does not match its config: missing {missing}, unexpected {unexpected}"
            )
        return model.to(map_location).eval()

    def parameter_groups(self, lr: float, weight_decay: float, gate_lr_multiplier: float) -> list[dict]:
        """AdamW groups: weights with decay; biases/norms/scalars without; gate scalars and temperature at
        ``gate_lr_multiplier`` times ``lr``; the gate network at ``lr`` without decay. The gate scalars and the
        gate network have groups of their own (:data:`GATE_GROUPS`) so that the trainer can hold them at their
        init for a while."""
        gate_ids = {id(p) for p in self.fusion.gate_parameters()}
        scale_ids = {id(self.log_logit_scale), id(self.logit_bias)}
        net_ids = {id(p) for p in self.fusion.gate_network_parameters()}
        decay, no_decay, fast, scale, net = [], [], [], [], []
        for p in self.parameters():
            if not p.requires_grad:
                continue
            if id(p) in gate_ids:
                fast.append(p)
            elif id(p) in scale_ids:
                scale.append(p)
            elif id(p) in net_ids:
                net.append(p)
            elif p.ndim < 2:
                no_decay.append(p)
            else:
                decay.append(p)
        groups = [
            {"params": decay, "weight_decay": weight_decay, "lr": lr, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "lr": lr, "name": "no_decay"},
            {"params": fast, "weight_decay": 0.0, "lr": lr * gate_lr_multiplier, "name": "gate"},
            {"params": scale, "weight_decay": 0.0, "lr": lr * gate_lr_multiplier, "name": "scale"},
            {"params": net, "weight_decay": 0.0, "lr": lr, "name": "gate_net"},
        ]
        return [g for g in groups if g["params"]]
