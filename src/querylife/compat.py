"""Options removed from the configuration, so that configs and checkpoints written before their removal still load.

Each config section that lost options validates through :func:`removed_options_validator`. A removed key at the
value it had by default is dropped (that behaviour is now the only one, so nothing changes); at any other value
loading stops with an error that names the option and says what it did, instead of quietly training or scoring
something else. What each option measured is kept in docs/TUNING.md ("Removed options"). A renamed key
(``RENAMED_OPTIONS``: an option that came back under another name) is read as its new name first.

Example::

    class LossConfig(BaseModel):
        ...
        _removed = removed_options_validator("loss")
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydantic import model_validator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemovedOption:
    """A removed config key: the value it had by default and what it did."""

    default: Any
    what: str


# Section (dotted, as in an experiment config) -> removed key -> its old default and meaning.
REMOVED_OPTIONS: dict[str, dict[str, RemovedOption]] = {
    "model": {
        "query_heads": RemovedOption(
            "shared",
            '"per_modality" gave the query two heads, one matched against titles and one against images (q = '
            "[q_t; q_v], index vectors twice as wide); queries now have one head",
        ),
    },
    "model.fusion": {
        "gate_inputs": RemovedOption(
            "type_query",
            "what the query-aware gate saw besides the product type. query_type_gate now always sees the type and "
            'the query; "type" alone is model.fusion.mode=type_gate, "type_query_modalities" also fed it the title '
            "and image vectors",
        ),
        "type_gate": RemovedOption(
            "free",
            'how the type gate was parameterised. "predicted" (an MLP over a type embedding) is gone: the type gate '
            "is one learned scalar per product type",
        ),
        "image_score_offset": RemovedOption(
            False, "a learned offset added to gated modes' scores in proportion to the image weight"
        ),
    },
    "loss": {
        "query_fused_in_type": RemovedOption(
            0.0, "the weight of a second query-fused contrastive term over negatives of the query's own product type"
        ),
    },
    "train": {
        "gate_net_lr_multiplier": RemovedOption(
            1.0, "a learning-rate multiplier for the query-aware gate network, which now trains at train.lr"
        ),
    },
}


# Section -> old key -> the key that now holds the same choice (same values, same meaning).
RENAMED_OPTIONS: dict[str, dict[str, str]] = {
    # Removed once, back since the storefront measurements (docs/TUNING.md "Fusion across storefronts").
    "model.fusion": {"renormalize": "normalize"},
}


def rename_options(values: Any, section: str) -> Any:
    """``values`` with the renamed keys of ``section`` under their new names. Raises ``ValueError`` when a config
    gives both names different values. Non-mappings pass through unchanged."""
    renamed = RENAMED_OPTIONS.get(section, {})
    if not isinstance(values, dict) or not renamed.keys() & values.keys():
        return values
    values = dict(values)
    for old, new in renamed.items():
        if old not in values:
            continue
        value = values.pop(old)
        if new in values and values[new] != value:
            raise ValueError(f"{section}.{old}={value!r} contradicts {section}.{new}={values[new]!r}: {old} is the "
                             f"old name of {new}; give only {new}")  # fmt: skip
        values[new] = value
    return values


def drop_removed_options(values: Any, section: str) -> Any:
    """``values`` without the removed keys of ``section`` that hold their old default (renamed keys are moved to
    their new names first, :func:`rename_options`).

    Raises ``ValueError`` naming the key when one holds any other value. Non-mappings pass through unchanged.
    """
    values = rename_options(values, section)
    removed = REMOVED_OPTIONS[section]
    if not isinstance(values, dict) or not removed.keys() & values.keys():
        return values
    values = dict(values)
    for key, option in removed.items():
        if key not in values:
            continue
        value = values.pop(key)
        if value != option.default:
            raise ValueError(
                f"{section}.{key}={value!r}: this option was removed from querylife. It was: {option.what}. Delete "
                f"the key to get its old default ({key}={option.default!r}), now the only behaviour, or use an "
                'earlier querylife version for this config or checkpoint. What it measured: docs/TUNING.md "Removed '
                'options"'
            )
        log.info("%s.%s=%r: removed option at its old default value, ignored", section, key, value)
    return values


def removed_options_validator(section: str) -> Any:
    """A pydantic ``mode="before"`` validator for a config class: applies :func:`drop_removed_options`."""

    def drop(cls: type, values: Any) -> Any:
        return drop_removed_options(values, section)

    return model_validator(mode="before")(classmethod(drop))
