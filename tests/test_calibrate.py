"""calibrator.json: fitted on dev as `eval` fits its decision, tied to the weights it was fitted for."""

from __future__ import annotations

import json

import numpy as np
import pytest

from querylife.calibrate import CALIBRATOR_NAME, calibrate_checkpoint, load_calibrator
from querylife.data.prepare import prepare_from_config
from querylife.evaluate import evaluate_model
from querylife.model import QueryLifeModel


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_text_model_dir, tiny_store):
    from querylife.config import load_config

    cfg = load_config(
        None,
        [
            f"data.catalog={tiny_store.catalog_path}",
            f"data.pairs={tiny_store.pairs_path}",
            f"model.tower.text_model={tiny_text_model_dir}",
            "model.tower.vision_model=small_cnn",
            "model.tower.small_cnn.channels=[8,16]",
            "model.tower.small_cnn.image_size=32",
            "model.embed_dim=16",
            "eval.calibration=isotonic",
        ],
    )
    data = prepare_from_config(cfg, progress=False)
    directory = tmp_path_factory.mktemp("ckpt") / "best"
    QueryLifeModel(cfg.model.model_copy(update={"product_types": data.product_types})).save_pretrained(directory)
    return cfg, data, directory


def test_calibrator_matches_the_decision_eval_fits(checkpoint):
    cfg, data, directory = checkpoint
    result = calibrate_checkpoint(directory, data, cfg.eval)
    assert result.calibrator is not None and result.path == directory / CALIBRATOR_NAME
    assert result.dev_pairs == len(data.splits["dev"])
    decision = {"method": "isotonic", "threshold_rule": "max_f1", "target_precision": 0.9}
    _, _, from_eval = evaluate_model(QueryLifeModel.from_pretrained(directory), data, n_boot=0, decision=decision)
    saved = json.loads(result.path.read_text())
    assert saved["method"] == "isotonic"
    assert saved["threshold"] == pytest.approx(from_eval.threshold, abs=0)
    assert saved["x_thresholds"] == from_eval.x_thresholds
    loaded, note = load_calibrator(directory)
    assert loaded is not None and "isotonic" in note
    s = np.linspace(-1, 1, 21)
    np.testing.assert_array_equal(loaded.predict_proba(s), from_eval.predict_proba(s))
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_missing_or_stale_calibrator_is_refused_with_a_reason(checkpoint, tmp_path):
    cfg, data, directory = checkpoint
    import shutil

    copy = tmp_path / "best"
    shutil.copytree(directory, copy)
    (copy / CALIBRATOR_NAME).unlink(missing_ok=True)
    cal, note = load_calibrator(copy)
    assert cal is None and "missing" in note and "querylife calibrate" in note
    calibrate_checkpoint(copy, data, cfg.eval)
    assert load_calibrator(copy)[0] is not None
    # retrained in place: other weights, the old calibrator no longer applies
    QueryLifeModel(QueryLifeModel.from_pretrained(copy).config.model_copy(update={"embed_dim": 16})).save_pretrained(
        copy
    )
    cal, note = load_calibrator(copy)
    assert cal is None and "other weights" in note
    (copy / CALIBRATOR_NAME).write_text("{not json")
    cal, note = load_calibrator(copy)
    assert cal is None and "cannot read" in note


@pytest.mark.slow  # four CLI processes: ~8 s each on a busy 2-core machine
def test_cli_refuses_what_it_cannot_use(checkpoint, tmp_path):
    from test_cli import cli, show

    _, _, directory = checkpoint
    proc = cli("calibrate", "--checkpoint", tmp_path / "nope", cwd=tmp_path)
    assert proc.returncode == 2 and "not a querylife checkpoint" in proc.stderr, show(proc)
    proc = cli("serve", "--checkpoint", directory, "--store", tmp_path / "no-store", cwd=tmp_path)
    assert proc.returncode == 2 and "no such embedding store" in proc.stderr, show(proc)
    (tmp_path / "store").mkdir()
    proc = cli("serve", "--checkpoint", directory, "--store", tmp_path / "store", "--api-key-env", "QL_UNSET_KEY_VAR",
               cwd=tmp_path)
    assert proc.returncode == 2 and "QL_UNSET_KEY_VAR" in proc.stderr and "command line" in proc.stderr, show(proc)
    proc = cli("serve", "--checkpoint", directory, "--store", tmp_path / "store", "--set", "max_candidatez=1",
               cwd=tmp_path)
    assert proc.returncode == 2 and "max_candidatez" in proc.stderr, show(proc)
