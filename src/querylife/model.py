"""The Query-LIFE model: towers + projection heads + fusion + temperature, with typed outputs.

Data flow (shapes for a batch of B (query, product) pairs, D = ``embed_dim``)::

    query  ─► query/text tower ─► (B, d_t) ─► query projection ─► q (B, D), unit norm
                                                (model.query_heads="per_modality": q = [q_t; q_v] (B, 2D), unit halves)
                                                ("per_modality_residual": q_v's head = q_t's + a decayed Δ)
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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors.torch import load_file, save_file
from torch import nn

from .fusion import Fusion, FusionConfig, FusionOutput, QueryHeads
from .losses import Embeddings
from .towers import TextTower, TowerConfig, VisionTower, build_towers

UNKNOWN_TYPE = "<unk>"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class ModelConfig(BaseModel):
    """Everything needed to rebuild the model (saved as config.json next to the weights)."""

    model_config = ConfigDict(extra="forbid")
    tower: TowerConfig = Field(default_factory=TowerConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    embed_dim: int = 256  # shared space of q, t, v; small keeps serving matrices cheap
    init_temperature: float = 0.05  # CLIP uses 0.07; frozen sentence encoders give tighter cosines
    learn_temperature: bool = True
    max_logit_scale: float = 100.0  # CLIP's clamp: prevents the temperature from collapsing
    # False: queries share the title head, which keeps a frozen tower's query-title geometry (docs/TUNING.md).
    separate_query_projection: bool = False
    # "per_modality": two query heads, q_t matched against titles and q_v against images, q = [q_t; q_v] (2D wide;
    # querylife.fusion). One shared q must match both t and v, so even at image weight 1 the fused model's image
    # branch is weaker than an image-only model's (benchmarks/results/fusion_storefronts_lite0.md). Default "shared":
    # the measured default, and every stored vector, index and exported query encoder stays D wide.
    # "per_modality_residual": as "per_modality", but q_v = normalize((W_t + Δ) x) with W_t q_t's head and Δ a
    # zero-initialised correction, the only extra parameter, decayed towards 0 (query_image_delta_decay below):
    # q_v stays near q_t unless the image terms pay for moving it (a free copy may overfit the training intents).
    query_heads: QueryHeads = "shared"
    # AdamW weight decay of Δ alone ("per_modality_residual" only; its own optimiser group). Decoupled decay, not an
    # L2 term in the loss: Adam divides a loss term's gradient by Δ's running gradient scale, so an L2 term's pull
    # would depend on how loud the image terms are, and it would have to be added in each loss path (plain,
    # GradCache, sharded). A run shrinks Δ by exp(-this x sum of lr) (sum ~ steps x lr / 2 with the cosine schedule:
    # 0.086 for a 172-step run at lr 1e-3), and an entry pushed one way every step settles near 1/this; the head's
    # entries are ~1/sqrt(tower dim) ~ 0.05, so 30 keeps Δ small next to W_t unless the image terms keep pushing.
    query_image_delta_decay: float = Field(default=30.0, ge=0.0)
    init_logit_bias: float = -5.0  # sigmoid loss only: starts with a low prior of any pair being positive
    # Product-type vocabulary, filled from the training catalogue; index 0 is reserved for unseen types.
    product_types: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _heads_need_a_convex_fusion(self) -> ModelConfig:
        if self.query_heads != "shared" and self.fusion.mode == "concat":
            raise ValueError(
                f'model.query_heads="{self.query_heads}" does not work with model.fusion.mode="concat" (one MLP '
                'product vector, no title and image halves to match each query head with); use a convex fusion mode or '
                'model.query_heads="shared"'
            )
        return self


# The optimiser groups of QueryLifeModel.parameter_groups that hold the gate (held at their init for the first
# train.gate_start_fraction of training).
GATE_GROUPS = ("gate", "gate_net")


@dataclass
class QueryLifeOutput:
    """Forward pass over a batch of B positive pairs (diagonal = positives).

    q, t, v: (B, D) unit vectors (v is zero where the product has no image); q is (B, 2D) ``[q_t; q_v]`` with
    per-modality query heads.
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
        self.query_image_proj: nn.Linear | None = None
        if config.query_heads == "per_modality":
            # q_v's head starts as a copy of q_t's, so step 0's query-title and query-image cosines (and the aux
            # terms) are exactly the shared model's and q_v moves away only where the image terms pull it.
            # skip_init draws no random numbers: every other part gets the same init as with one shared head.
            q_head = self.query_proj or self.title_proj
            self.query_image_proj = torch.nn.utils.skip_init(nn.Linear, q_dim, d, bias=False)
            self.query_image_proj.weight.data.copy_(q_head.weight.data)
        self.query_image_delta: nn.Parameter | None = None
        if config.query_heads == "per_modality_residual":
            # Δ (D, d_q) = 0 at step 0, so q_v == q_t exactly (W_t + 0 is W_t); zeros draw no random numbers either.
            q_head = self.query_proj or self.title_proj
            self.query_image_delta = nn.Parameter(torch.zeros_like(q_head.weight))
        self.image_proj = nn.Linear(self.vision_tower.dim, d)
        self.types = [UNKNOWN_TYPE, *[t for t in config.product_types if t != UNKNOWN_TYPE]]
        self._type_index = {t: i for i, t in enumerate(self.types)}
        self.fusion = Fusion(config.fusion, n_types=len(self.types), dim=d, query_heads=config.query_heads)
        scale = torch.tensor(math.log(1.0 / config.init_temperature))
        self.log_logit_scale = nn.Parameter(scale, requires_grad=config.learn_temperature)
        self.logit_bias = nn.Parameter(torch.tensor(config.init_logit_bias))

    # ---- helpers ----------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.log_logit_scale.device

    @property
    def query_dim(self) -> int:
        """Width of the query vectors: ``embed_dim``, or 2 x ``embed_dim`` with per-modality query heads."""
        return self.fusion.query_dim

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
        """Unit query vectors (B, D); with per-modality heads ``[q_t; q_v]`` (B, 2D), each half a unit vector."""
        head = self.query_proj or self.title_proj
        features = features.to(self.device)
        q = F.normalize(head(features), dim=-1)  # (B, D)
        if self.query_image_delta is not None:
            # One product with the summed weight (not head(x) + Δx): the exported encoder's materialised head
            # (query_image_head) then computes exactly this.
            q_v = F.linear(features, head.weight + self.query_image_delta, head.bias)  # (B, D)
            return torch.cat([q, F.normalize(q_v, dim=-1)], -1)  # (B, 2D)
        if self.query_image_proj is None:
            return q
        return torch.cat([q, F.normalize(self.query_image_proj(features), dim=-1)], -1)  # (B, 2D)

    def query_image_head(self) -> nn.Linear | None:
        """q_v's head as one linear layer (what the exported query encoders apply), or None with one shared head.
        ``per_modality_residual``: a detached layer with weight W_t + Δ, built on each call."""
        if self.query_image_delta is None:
            return self.query_image_proj
        head = self.query_proj or self.title_proj
        layer = torch.nn.utils.skip_init(nn.Linear, head.in_features, head.out_features, bias=head.bias is not None)
        with torch.no_grad():
            layer.weight.copy_(head.weight + self.query_image_delta)
            if head.bias is not None:
                layer.bias.copy_(head.bias)
        return layer.to(self.device).requires_grad_(False)

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
        """Fused relevance scores: (Bq, Bp) when ``pairwise`` else row-aligned (N,)."""
        has_image = has_image.to(self.device)
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
        q, t = self.project_queries(qf), self.project_titles(tf)  # (Bq, D) or (Bq, 2D) per modality, (Bp, D)
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
        fused = self.score(q, t, v, type_ids, has_image, pairwise=True)
        q_t, q_v = self.fusion.query_parts(q)  # both q itself with one shared head
        sims = {"query_fused": fused.scores, "query_title": q_t @ t.T, "query_image": q_v @ v.T, "title_image": t @ v.T}
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
            config = ModelConfig.model_validate(json.loads(cfg_path.read_text()))
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
        missing = [k for k in missing if not k.startswith(frozen)]
        if missing or unexpected:
            raise ValueError(
                f"checkpoint {directory} does not match its config: missing {missing}, unexpected {unexpected}"
            )
        return model.to(map_location).eval()

    def parameter_groups(self, lr: float, weight_decay: float, gate_lr_multiplier: float) -> list[dict]:
        """AdamW groups: weights with decay; biases/norms/scalars without; gate scalars and temperature at
        ``gate_lr_multiplier`` times ``lr``; the gate network at ``lr`` without decay. The gate scalars and the
        gate network have groups of their own (:data:`GATE_GROUPS`) so that the trainer can hold them at their
        init for a while. ``per_modality_residual``: Δ alone in a last group with ``model.query_image_delta_decay``."""
        gate_ids = {id(p) for p in self.fusion.gate_parameters()}
        scale_ids = {id(self.log_logit_scale), id(self.logit_bias)}
        net_ids = {id(p) for p in self.fusion.gate_network_parameters()}
        delta = self.query_image_delta
        decay, no_decay, fast, scale, net = [], [], [], [], []
        for p in self.parameters():
            if not p.requires_grad or p is delta:
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
        if delta is not None and delta.requires_grad:  # per_modality_residual: Δ with its own decay (ModelConfig)
            wd = self.config.query_image_delta_decay
            groups.append({"params": [delta], "weight_decay": wd, "lr": lr, "name": "query_image_delta"})
        return [g for g in groups if g["params"]]
