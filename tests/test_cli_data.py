"""``querylife data check`` / ``train`` on a catalogue in a stranger's layout, run as a user would (subprocess)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_catalogue_loading import user_store
from test_cli import cli, show, tiny_overrides


def test_check_uses_an_image_alias_reports_messy_titles_and_reads_a_folder_like_its_files(tmp_path):
    def messy(titles: pd.Series) -> pd.Series:
        t = titles.copy()
        t[0] = "red\x07dress\n0"
        t[5] = "x" * 5000
        return t

    cat, prs = user_store(tmp_path / "store", image_column="image", titles=messy)
    proc = cli("data", "check", cat, prs, "--set", "data.split_by=intent", "--json", tmp_path / "r.json", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)  # warnings are not problems
    out = proc.stdout
    assert out.startswith("# Data check: OK, 2 warnings\n\n## Warnings\n"), show(proc)
    assert "titles: 1 held control characters (tabs, newlines, ...), first at row 1" in out, show(proc)
    assert "titles: 1 longer than 512 characters (data.max_title_chars; the longest has 5000, first at row 6)" in (
        out), show(proc)
    assert "catalog.csv: columns used: image_path <- 'image' (alias)" in out, show(proc)
    assert "| decoded fine | 12 | 100.0% |" in out, show(proc)
    assert "split: the pairs' own `split` column (train 58 / dev 12 / test 32 pairs)" in out, show(proc)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] and report["images"]["n_ok"] == 12 and report["n_warnings"] == 2
    # The folder holding the two files gives the very same report.
    by_dir = cli("data", "check", tmp_path / "store", "--set", "data.split_by=intent", cwd=tmp_path)
    assert by_dir.returncode == 0 and by_dir.stdout == out, show(by_dir)


def test_check_warns_at_the_top_when_the_image_column_is_not_used(tmp_path):
    cat, prs = user_store(tmp_path, image_column="pic")
    proc = cli("data", "check", cat, prs, cwd=tmp_path)
    assert proc.returncode == 0, show(proc)  # warnings are not problems
    head = proc.stdout.split("| |")[0]  # everything above the summary table
    assert head.startswith("# Data check: OK, 2 warnings"), show(proc)
    assert "column 'pic' looks like image paths" in head and "--column image_path=pic" in head, show(proc)
    assert "this run is text-only" in head, show(proc)
    assert "None found (but see the warnings above)." in proc.stdout, show(proc)
    # The mapping (here as --set data.columns={...}; --column in the train test) gives a clean report.
    proc = cli("data", "check", cat, prs, "--set", "data.columns={image_path: pic}", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert proc.stdout.startswith("# Data check: OK\n"), show(proc)
    assert "image_path <- 'pic' (data.columns)" in proc.stdout and "| decoded fine | 12 |" in proc.stdout


def test_bad_column_option_and_unknown_field_are_clear_errors(tmp_path):
    cat, prs = user_store(tmp_path)
    proc = cli("data", "check", cat, prs, "--column", "image_path", cwd=tmp_path)
    assert proc.returncode == 2 and "FIELD=COLUMN" in proc.stderr and "Traceback" not in proc.stderr, show(proc)
    proc = cli("data", "check", cat, prs, "--column", "photo=image", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown field 'photo'" in proc.stderr, show(proc)
    assert "Traceback" not in proc.stderr, show(proc)


@pytest.mark.slow
def test_train_honours_the_split_column_and_the_mapping_and_trains_with_images(tmp_path, tiny_text_model_dir):
    cat, prs = user_store(tmp_path, image_column="pic")
    proc = cli(
        "train", "--catalog", cat, "--pairs", prs, "--column", "image_path=pic", "--out", tmp_path / "run",
        *tiny_overrides(tiny_text_model_dir, epochs=1), "--set", "model.tower.small_cnn.image_size=16",
        "--set", "data.split_by=intent", "--quiet", cwd=tmp_path,
    )
    assert proc.returncode == 0, show(proc)
    err = proc.stderr
    assert "catalog.csv: columns used: image_path <- 'pic' (data.columns)" in err, show(proc)
    assert "split: the pairs' own `split` column (train 58 / dev 12 / test 32 pairs)" in err, show(proc)
    assert "text-only" not in err and "warning:" not in err, show(proc)
    summary = json.loads((tmp_path / "run" / "best" / "summary.json").read_text())
    assert summary["config"]["data"]["columns"] == {"image_path": "pic"}


def test_data_on_the_command_line_replaces_the_configs_files(tmp_path):
    cat, prs = user_store(tmp_path / "store", image_column="image")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  catalog: {tmp_path / 'nope.csv'}\n  pairs: {tmp_path / 'nope.csv'}\n")
    proc = cli("train", "--config", cfg, "--data", tmp_path / "store", "--catalog", cat, "--out", tmp_path / "r",
               cwd=tmp_path)
    assert proc.returncode == 2 and "not both" in proc.stderr, show(proc)
    # --data wins over the config's files: they are not read; the run stops later, at the impossible split.
    proc = cli("train", "--config", cfg, "--data", tmp_path / "store", "--out", tmp_path / "r",
               "--set", "data.split=[2,0,0]", "--set", "data.official_split=false", cwd=tmp_path)
    assert proc.returncode == 2 and "split fractions must sum to 1" in proc.stderr, show(proc)
    assert "nope.csv" not in proc.stderr and "Traceback" not in proc.stderr, show(proc)


def test_a_tower_that_cannot_be_loaded_is_a_clear_error(tmp_path):
    cat, prs = user_store(tmp_path)
    proc = cli("train", "--catalog", cat, "--pairs", prs, "--out", tmp_path / "r", "--quiet",
               "--set", f"model.tower.text_model={tmp_path / 'no_such_model'}", cwd=tmp_path)
    assert proc.returncode == 2, show(proc)
    assert "cannot load the text model" in proc.stderr and "Traceback" not in proc.stderr, show(proc)
