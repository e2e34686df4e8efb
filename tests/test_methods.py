"""The method registry: names, defaults, overrides that the config accepts, old names as aliases."""

from __future__ import annotations

import warnings

import pytest

from querylife.config import ExperimentConfig, with_overrides
from querylife.genfilt.training import JUDGES
from querylife.methods import (
    ALIASES,
    DEFAULT_METHODS,
    METHODS,
    NEEDS_DESCRIBER,
    REFERENCE_METHOD,
    MethodError,
    get_method,
    methods_help,
    parse_methods,
    resolve_method,
    resolve_methods,
)


def test_defaults_are_the_offline_methods_in_table_order():
    assert DEFAULT_METHODS[:3] == ("bm25", "zero_shot", REFERENCE_METHOD)
    named_only = {m for m in METHODS if not METHODS[m].in_default}  # run only when named
    assert named_only == {"query_gate", "dev_type_gate", "query_gate_residual"}
    assert set(DEFAULT_METHODS) | set(NEEDS_DESCRIBER) | named_only == set(METHODS)
    assert not set(DEFAULT_METHODS) & set(NEEDS_DESCRIBER)
    assert NEEDS_DESCRIBER == ("mask_genfilt_descriptions", "mask_genfilt_generative")
    assert [m for m in METHODS if not METHODS[m].trained] == ["bm25", "zero_shot"]


@pytest.mark.parametrize("name", [m for m in METHODS if METHODS[m].trained])
def test_every_trained_method_is_a_valid_config(name):
    method = METHODS[name]
    cfg = with_overrides(ExperimentConfig(), dict(method.overrides))  # unknown keys / bad values raise here
    if name.startswith("mask_"):
        assert cfg.train.false_negative_judge in JUDGES and cfg.train.false_negative_judge != "none"
    else:
        assert cfg.train.false_negative_judge == "none"
    assert method.description


def test_the_reference_method_is_the_configured_model():
    assert METHODS[REFERENCE_METHOD].overrides == {}


def test_old_names_resolve_with_a_deprecation_note():
    assert set(ALIASES.values()) <= set(METHODS) and not set(ALIASES) & set(METHODS)
    with pytest.warns(FutureWarning, match="'full' was renamed 'querylife'"):
        assert resolve_method("full") == "querylife"
    with pytest.warns(FutureWarning, match="fn_generative"):
        assert get_method("fn_generative").name == "mask_genfilt_generative"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # current names: no warning
        assert resolve_methods(["bm25", " mean "]) == ("bm25", "mean")


def test_unknown_names_are_errors_listing_the_known_ones():
    with pytest.raises(MethodError, match=r"unknown method 'nope'; known: bm25, zero_shot, querylife"):
        resolve_method("nope")
    with pytest.raises(ValueError):  # MethodError is a ValueError
        parse_methods("bm25,nope")


def test_parse_methods():
    assert parse_methods(None) == DEFAULT_METHODS
    assert parse_methods("  ") == DEFAULT_METHODS
    assert parse_methods("bm25, querylife,,mask_guide") == ("bm25", "querylife", "mask_guide")
    with pytest.warns(FutureWarning):
        assert parse_methods("fn_guide,mean") == ("mask_guide", "mean")


def test_help_names_every_method_and_alias():
    text = methods_help()
    for name in [*METHODS, *ALIASES]:
        assert name in text


def test_fusion_modes_under_measurement_run_only_when_named():
    from querylife.methods import DEFAULT_METHODS, METHODS, parse_methods

    for name in ("query_gate", "dev_type_gate"):
        assert name not in DEFAULT_METHODS
        assert parse_methods(name) == (name,)
    assert METHODS["dev_type_gate"].overrides == {"model.fusion.mode": "dev_type_gate"}
    assert METHODS["query_gate"].overrides == {"model.fusion.mode": "query_type_gate"}
