"""The real ``querylife`` command line, run as a subprocess on tiny data made in the test session.

Each test starts ``python -m querylife.cli ...`` the way a user would (exit codes, stdout/stderr, files on disk),
not typer's in-process ``CliRunner``. The tiny random BERT, tiny CNN and small storefront from ``conftest.py``
keep every command to a few seconds of CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

SRC = Path(__file__).resolve().parents[1] / "src"
TIMEOUT = 180  # seconds for any one command; the slowest takes ~10 s on 2 CPU cores


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        # One intra-op thread: the tiny models gain nothing from more, and on a 2-core box shared with another
        # busy process torch's default thread pool spins and makes a 6 s run take 30 s.
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        NO_COLOR="1",
        COLUMNS="200",
        PYTHONPATH=os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p),
    )
    env.pop("FORCE_COLOR", None)
    return env


def cli(*args, cwd: Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``python -m querylife.cli ARGS`` and capture its output (text)."""
    return subprocess.run(
        [sys.executable, "-m", "querylife.cli", *map(str, args)],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def show(proc: subprocess.CompletedProcess) -> str:
    """Output for assertion messages."""
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"


def tiny_overrides(text_model: Path, epochs: int = 2) -> list[str]:
    sets = [
        f"model.tower.text_model={text_model}",
        "model.tower.vision_model=small_cnn",
        "model.tower.small_cnn.channels=[8,16]",
        "model.tower.small_cnn.image_size=32",
        "model.embed_dim=16",
        f"train.epochs={epochs}",
        "train.batch_size=16",
    ]
    return [arg for s in sets for arg in ("--set", s)]


# The demo's own tower is EfficientNet-Lite0 at 224 px; the CLI tests of the demo run the small CNN (fast).
SMALL_CNN = ["--set", "model.tower.vision_model=small_cnn", "--set", "model.tower.train_vision_layers=-1"]


def temp_leftovers(directory: Path) -> list[str]:
    """Hidden temporary/backup entries an atomic writer leaves if it dies mid-write (``.last.x1y2.tmp``, ...)."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith((".tmp", ".old")))


def digest_tree(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# ----------------------------------------------------------------------------------------------------------
# --help


@pytest.mark.parametrize(
    "command",
    [[], ["demo"], ["data", "demo"], ["data", "check"], ["train"], ["eval"]],
    ids=["top", "demo", "data-demo", "data-check", "train", "eval"],
)
def test_help_shows_an_example(command, tmp_path):
    proc = cli(*command, "--help", cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, show(proc)
    assert "Usage:" in proc.stdout
    assert "Example" in proc.stdout, show(proc)
    assert "Traceback" not in proc.stderr


def test_data_group_help(tmp_path):
    proc = cli("data", "--help", cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, show(proc)
    assert "demo" in proc.stdout and "check" in proc.stdout


# ----------------------------------------------------------------------------------------------------------
# data demo


def test_data_demo_writes_and_reuses_the_storefront(tmp_path):
    out = tmp_path / "store"
    args = ["data", "demo", "--out", out, "--products", 100, "--seed", 1, "--image-size", 32]
    first = cli(*args, cwd=tmp_path)
    assert first.returncode == 0, show(first)
    for name in ("catalog.parquet", "pairs.parquet", "images"):
        assert (out / name).exists(), name
    catalog = pd.read_parquet(out / "catalog.parquet")
    assert len(catalog) == 100
    assert len(list((out / "images").glob("*.png"))) == catalog["image_path"].notna().sum() > 0
    assert len(pd.read_parquet(out / "pairs.parquet")) > 0
    assert str(out / "catalog.parquet") in first.stdout
    before = digest_tree(out)
    mtime = (out / "catalog.parquet").stat().st_mtime_ns

    # Same config again: reused as is, not regenerated (the files are not even rewritten).
    second = cli(*args, cwd=tmp_path)
    assert second.returncode == 0, show(second)
    assert (out / "catalog.parquet").stat().st_mtime_ns == mtime
    assert digest_tree(out) == before

    # Regenerated from scratch with the same seed: the same bytes.
    third = cli(*args, "--overwrite", cwd=tmp_path)
    assert third.returncode == 0, show(third)
    assert (out / "catalog.parquet").stat().st_mtime_ns != mtime
    assert digest_tree(out) == before


def test_data_demo_renders_at_the_default_towers_input_size(tmp_path):
    # `querylife train` on this storefront with the defaults loads photos at Lite0's 224 px: render them at that
    # size, as `querylife demo` does, instead of at 64 px to be upsampled.
    from PIL import Image

    proc = cli("data", "demo", "--out", tmp_path / "s", "--products", 64, cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    first = sorted((tmp_path / "s" / "images").glob("*.png"))[0]
    assert Image.open(first).size == (224, 224)
    too_few = cli("data", "demo", "--out", tmp_path / "t", "--products", 16, cwd=tmp_path)
    assert too_few.returncode != 0 and "n_products must be >= 64, got 16" in too_few.stderr, show(too_few)
    assert "Traceback" not in too_few.stderr  # a bad argument is a message, not a crash


# ----------------------------------------------------------------------------------------------------------
# data check

GOOD_CATALOG = (
    "product_id,title,product_type,image_path\n"
    "p1,red dress,dress,img0.png\n"
    "p2,blue shirt,shirt,img1.png\n"
    "p3,power bank 10000 mah,power bank,img2.png\n"
)
GOOD_PAIRS = (
    "query,product_id,label\n"
    "red dress,p1,exact\n"
    "red dress,p2,irrelevant\n"
    "blue shirt,p2,exact\n"
    "blue shirt,p1,partial\n"
)


def write_small_dataset(directory: Path, catalog: str = GOOD_CATALOG, pairs: str = GOOD_PAIRS) -> tuple[Path, Path]:
    """A 3-product CSV catalogue with real PNGs and a 4-row pairs CSV (plus one garbage 'PNG')."""
    for i in range(3):
        Image.new("RGB", (8, 8), (60 * i, 100, 200)).save(directory / f"img{i}.png")
    (directory / "garbage.png").write_bytes(b"\x00\xffthis is not an image\x13\x37" * 20)
    cat, prs = directory / "catalog.csv", directory / "pairs.csv"
    cat.write_text(catalog)
    prs.write_text(pairs)
    return cat, prs


def test_data_check_small_good_csv(tmp_path):
    cat, prs = write_small_dataset(tmp_path)
    proc = cli("data", "check", cat, prs, cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert proc.stdout.startswith("# Data check: OK"), show(proc)


def test_data_check_tiny_store(tiny_store, tmp_path):
    proc = cli(
        "data", "check", tiny_store.catalog_path, tiny_store.pairs_path, "--json", tmp_path / "r.json", cwd=tmp_path
    )
    assert proc.returncode == 0, show(proc)
    n_products = len(pd.read_parquet(tiny_store.catalog_path))
    pairs = pd.read_parquet(tiny_store.pairs_path)
    out = proc.stdout
    assert out.startswith("# Data check: OK"), show(proc)
    assert f"| products | {n_products} rows, {n_products} valid" in out, show(proc)
    assert f"| pair rows | {len(pairs)} rows, {len(pairs)} valid" in out, show(proc)
    assert f"| queries | {pairs['query'].nunique()} |" in out, show(proc)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] is True and report["n_products"] == n_products and report["n_pairs"] == len(pairs)


# (case, catalogue text, pairs text, issue kind, file with the problem, 1-based data row, field, text in message)
BAD_CASES = [
    (
        "duplicate-product-id",
        GOOD_CATALOG + "p2,another blue shirt,shirt,img1.png\n",
        GOOD_PAIRS,
        "catalog: duplicate product_id", "catalog", 4, "product_id", "'p2'",
    ),
    (
        "empty-title",
        GOOD_CATALOG.replace("blue shirt,", ","),
        GOOD_PAIRS,
        "catalog: empty title", "catalog", 2, "title", "title is empty",
    ),
    (
        "unknown-product",
        GOOD_CATALOG,
        GOOD_PAIRS + "red dress,p999,exact\n",
        "pairs: unknown product", "pairs", 5, "product_id", "'p999'",
    ),
    (
        "unknown-label",
        GOOD_CATALOG,
        GOOD_PAIRS + "red dress,p3,bogus\n",
        "pairs: unknown label", "pairs", 5, "label", "'bogus'",
    ),
    (
        "missing-image",
        GOOD_CATALOG.replace("img2.png", "no_such_image.png"),
        GOOD_PAIRS,
        "images: missing image file", "catalog", 3, "image_path", "no_such_image.png",
    ),
    (
        "corrupt-image",
        GOOD_CATALOG.replace("img2.png", "garbage.png"),
        GOOD_PAIRS,
        "images: corrupt image", "catalog", 3, "image_path", "garbage.png",
    ),
]


@pytest.mark.parametrize(
    "catalog_text, pairs_text, kind, where, row, field, needle",
    [case[1:] for case in BAD_CASES],
    ids=[case[0] for case in BAD_CASES],
)
def test_data_check_reports_bad_rows(tmp_path, catalog_text, pairs_text, kind, where, row, field, needle):
    cat, prs = write_small_dataset(tmp_path, catalog_text, pairs_text)
    bad_file = cat if where == "catalog" else prs
    proc = cli("data", "check", cat, prs, "--json", tmp_path / "report.json", cwd=tmp_path)
    assert proc.returncode == 1, show(proc)
    assert "Traceback" not in proc.stderr, show(proc)
    out = proc.stdout
    assert out.startswith("# Data check: 1 problem"), show(proc)
    # The example line names the kind, the file, the row and the field.
    lines = [line for line in out.splitlines() if line.startswith(f"- **{kind}**")]
    assert lines, show(proc)
    assert bad_file.name in lines[0] and f"row {row}" in lines[0] and f"field `{field}`" in lines[0], lines[0]
    assert needle in lines[0], lines[0]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] is False and report["counts"] == {kind: 1}
    (issue,) = report["errors"]
    assert (issue["kind"], Path(issue["file"]).name, issue["row"], issue["field"]) == (kind, bad_file.name, row, field)


def test_data_check_missing_file(tmp_path):
    _, prs = write_small_dataset(tmp_path)
    proc = cli("data", "check", tmp_path / "no_such_catalog.csv", prs, cwd=tmp_path)
    assert proc.returncode == 2, show(proc)
    assert "Traceback" not in proc.stderr, show(proc)
    assert "error:" in proc.stderr and "no_such_catalog.csv" in proc.stderr and "not found" in proc.stderr, show(proc)


def test_data_check_missing_column(tmp_path):
    cat, prs = write_small_dataset(tmp_path, "product_id,product_type,image_path\np1,dress,img0.png\n")
    proc = cli("data", "check", cat, prs, cwd=tmp_path)
    assert proc.returncode == 2, show(proc)
    assert "Traceback" not in proc.stderr, show(proc)
    assert "catalog.csv" in proc.stderr and "'title'" in proc.stderr and "missing" in proc.stderr, show(proc)


# ----------------------------------------------------------------------------------------------------------
# train

RESUME_EPOCHS = 3


@pytest.fixture(scope="module")
def trained_run(tiny_store, tiny_text_model_dir, tmp_path_factory):
    """One uninterrupted ``querylife train`` run (3 epochs: also the reference for the resume test)."""
    work = tmp_path_factory.mktemp("cli_train")
    run = work / "run"
    proc = cli(
        "train", "--catalog", tiny_store.catalog_path, "--pairs", tiny_store.pairs_path, "--out", run,
        *tiny_overrides(tiny_text_model_dir, epochs=RESUME_EPOCHS), "--quiet",
        cwd=work,
    )
    assert proc.returncode == 0, show(proc)
    return run, proc


@pytest.mark.slow
def test_train_writes_best_and_last(trained_run):
    run, proc = trained_run
    assert "best epoch" in proc.stdout and str(run / "best") in proc.stdout, show(proc)
    for name in ("model.safetensors", "config.json", "summary.json", "README.md"):
        assert (run / "best" / name).is_file() and (run / "best" / name).stat().st_size > 0, name
    for name in ("model.safetensors", "optimizer.safetensors", "trainer_state.json"):
        assert (run / "last" / name).is_file(), name
    assert (run / "config.json").is_file()
    summary = json.loads((run / "best" / "summary.json").read_text())
    assert 1 <= summary["best_epoch"] <= RESUME_EPOCHS
    assert len(summary["history"]) >= summary["best_epoch"]
    assert summary["config"]["model"]["embed_dim"] == 16
    assert json.loads((run / "last" / "trainer_state.json").read_text())["epoch"] == RESUME_EPOCHS
    assert "querylife checkpoint" in (run / "best" / "README.md").read_text()
    assert temp_leftovers(run) == []


def test_train_bad_override_names_the_key(tiny_store, tmp_path):
    run = tmp_path / "run"
    proc = cli(
        "train", "--catalog", tiny_store.catalog_path, "--pairs", tiny_store.pairs_path, "--out", run,
        "--set", "train.nope=1", cwd=tmp_path,
    )
    assert proc.returncode == 2, show(proc)
    assert "Traceback" not in proc.stderr, show(proc)
    assert "train.nope" in proc.stderr, show(proc)
    assert not run.exists()


def test_train_without_data_says_so(tmp_path):
    proc = cli("train", "--out", tmp_path / "run", cwd=tmp_path)
    assert proc.returncode == 2, show(proc)
    assert "Traceback" not in proc.stderr, show(proc)
    assert "no data" in proc.stderr and "--catalog" in proc.stderr and "--pairs" in proc.stderr, show(proc)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------------------------
# train --resume after a real SIGKILL


@pytest.fixture(scope="module")
def resumed_run(tiny_store, tiny_text_model_dir, tmp_path_factory):
    """Start training with a checkpoint every step, SIGKILL it once last/ exists, then ``train --resume``."""
    work = tmp_path_factory.mktemp("cli_resume")
    run = work / "run"
    args = [
        "train", "--catalog", tiny_store.catalog_path, "--pairs", tiny_store.pairs_path, "--out", run,
        *tiny_overrides(tiny_text_model_dir, epochs=RESUME_EPOCHS), "--set", "train.save_every_steps=1",
    ]
    log = work / "killed.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "querylife.cli", *map(str, args), "--quiet"],
            cwd=work, env=_env(), stdout=fh, stderr=subprocess.STDOUT,
        )
        try:
            state_file = run / "last" / "trainer_state.json"
            deadline = time.monotonic() + TIMEOUT
            while not state_file.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            finished_early = proc.poll() is not None
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    assert not finished_early, f"training ended before it could be killed:\n{log.read_text()[-4000:]}"
    assert proc.returncode == -signal.SIGKILL
    # The killed run must leave a complete last/ (atomic checkpoints), whatever it was doing when killed.
    assert state_file.is_file(), f"no complete last/ after the kill: {sorted(p.name for p in run.iterdir())}"
    killed_state = json.loads(state_file.read_text())
    # A kill that lands while a checkpoint is being written leaves its temp dir; make that case deterministic.
    stale = run / ".last.k1lled00.tmp"
    stale.mkdir(exist_ok=True)
    (stale / "model.safetensors").write_bytes(b"half a file")

    resumed = cli(*args, "--resume", cwd=work)  # not --quiet: the "resuming" line is a progress message
    return run, killed_state, resumed


@pytest.mark.slow
def test_train_resume_after_sigkill(resumed_run, trained_run):
    run, killed_state, proc = resumed_run
    assert proc.returncode == 0, show(proc)
    assert "resuming" in proc.stdout, show(proc)
    assert killed_state["epoch"] < RESUME_EPOCHS  # really interrupted mid-run
    for name in ("model.safetensors", "config.json", "summary.json", "README.md"):
        assert (run / "best" / name).is_file(), name
    final = json.loads((run / "last" / "trainer_state.json").read_text())
    assert final["epoch"] == RESUME_EPOCHS
    assert final["global_step"] > killed_state["global_step"]
    # Resuming is exact: the same dev scores, epoch by epoch, as the uninterrupted run with this config.
    reference = json.loads((trained_run[0] / "best" / "summary.json").read_text())
    summary = json.loads((run / "best" / "summary.json").read_text())
    assert summary["best_epoch"] == reference["best_epoch"]
    assert [h["dev_ndcg@10"] for h in final["history"]] == pytest.approx(
        [h["dev_ndcg@10"] for h in json.loads((trained_run[0] / "last" / "trainer_state.json").read_text())["history"]],
        abs=1e-4,
    )


@pytest.mark.slow
def test_train_resume_leaves_no_checkpoint_temp_dirs(resumed_run):
    run, _, proc = resumed_run
    assert proc.returncode == 0, show(proc)
    assert temp_leftovers(run) == [], "temp dirs of checkpoints written by the killed run are never removed"


# ----------------------------------------------------------------------------------------------------------
# eval and demo


@pytest.mark.slow
def test_eval_checkpoint_writes_report(trained_run, tiny_store, tiny_text_model_dir, tmp_path):
    run, _ = trained_run
    out = tmp_path / "eval"
    proc = cli(
        "eval", "--checkpoint", run / "best", "--catalog", tiny_store.catalog_path, "--pairs", tiny_store.pairs_path,
        "--out", out, *tiny_overrides(tiny_text_model_dir), "--quiet", cwd=tmp_path,
    )
    assert proc.returncode == 0, show(proc)
    assert (out / "report.md").is_file() and (out / "report.json").is_file()
    assert list(out.glob("*.png")), sorted(p.name for p in out.iterdir())
    report = json.loads((out / "report.json").read_text())
    name = run.name  # a checkpoint at RUN/best is reported under the run's name
    assert {"bm25", "zero_shot", name} <= set(report["results"]), list(report["results"])
    assert report["methods"] == ["bm25", "zero_shot", name]
    for method in ("bm25", "zero_shot", name):
        assert method in proc.stdout, show(proc)
    assert "report.md" in proc.stdout


@pytest.mark.slow
def test_demo_end_to_end(tiny_text_model_dir, tmp_path):
    out = tmp_path / "demo"
    methods = ["bm25", "zero_shot", "querylife", "mean"]
    proc = cli(
        "demo", "--out", out, "--products", 120, "--methods", ",".join(methods), "--epochs", 1, "--quiet",
        *tiny_overrides(tiny_text_model_dir), *SMALL_CNN, cwd=tmp_path,
    )
    assert proc.returncode == 0, show(proc)
    table = [line for line in proc.stdout.splitlines() if "NDCG@10" in line and "Method" in line]
    assert table, show(proc)
    for method in methods:
        assert any(line.split()[:1] == [method] for line in proc.stdout.splitlines()), (method, show(proc))
    report_dir = out / "report"
    assert (report_dir / "report.md").is_file() and (report_dir / "report.json").is_file()
    assert list(report_dir.glob("*.png")), sorted(p.name for p in report_dir.iterdir())
    assert (out / "data" / "catalog.parquet").is_file()
    report = json.loads((report_dir / "report.json").read_text())
    assert report["methods"] == methods
    assert str(report_dir / "report.md") in proc.stdout
    # no describer configured: the GenFilt rows are left out, and the report says why
    assert "no generative describer is configured" in (report_dir / "report.md").read_text()


@pytest.mark.slow
def test_demo_with_a_describer_server_adds_the_genfilt_rows(tiny_text_model_dir, tmp_path):
    """`querylife demo` against an OpenAI-compatible server on loopback: stage 1 runs, the GenFilt rows train, and
    the report names the describer and shows every judge's mask precision / recall next to its NDCG@10."""
    from test_genfilt_openai import FakeOpenAIServer

    out = tmp_path / "demo"
    methods = ["querylife", "mask_guide"]
    with FakeOpenAIServer(rule=lambda title: f"{title}, as described" if title else "Yes") as server:
        proc = cli(
            "demo", "--out", out, "--products", 120, "--methods", ",".join(methods), "--epochs", 1, "--quiet",
            *tiny_overrides(tiny_text_model_dir), *SMALL_CNN, "--set", f"genfilt.guide_model={tiny_text_model_dir}",
            "--set", "genfilt.model=m", "--set", f"genfilt.base_url={server.url}",
            "--set", "genfilt.prefilter_margin=0.05", "--set", "genfilt.max_questions_per_batch=4", cwd=tmp_path,
        )
        described = sum(1 for r in server.requests if "Title: " in json.dumps(r))
    assert proc.returncode == 0, show(proc)
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["methods"] == [*methods, "mask_genfilt_descriptions", "mask_genfilt_generative"]
    assert described >= 120  # every product described once (stage 1)
    assert len((out / "genfilt" / "descriptions.jsonl").read_text().splitlines()) == 120
    md = (out / "report" / "report.md").read_text()
    assert "## GenFilt: false-negative judges" in md
    assert f"openai:{server.url}:m" in md  # the report names the model that wrote the descriptions
    judges = report["meta"]["genfilt"]["judges"]
    assert set(judges) == {"mask_guide", "mask_genfilt_descriptions", "mask_genfilt_generative"}
    for entry in judges.values():
        assert 0 <= entry["ndcg@10"] <= 1 and 0 <= entry["mask_rate"] <= 1


@pytest.mark.slow
def test_genfilt_evaluate_reports_every_judge(tiny_store, tmp_path):
    out = tmp_path / "gf"
    proc = subprocess.run(
        [sys.executable, "-m", "querylife.cli", "genfilt", "evaluate", "--catalog", str(tiny_store.catalog_path),
         "--pairs", str(tiny_store.pairs_path), "--out", str(out), "--batches", "5", "--set", "train.batch_size=16"],
        capture_output=True, text=True, timeout=180, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    table = json.loads((out / "genfilt_masks.json").read_text())
    assert set(table) == {"duplicate_title", "gist_guide"}
    for row in table.values():
        assert row["n_pairs"] > 0 and 0 <= row["mask_rate"] <= 1
    assert "gist_guide" in (out / "genfilt_masks.md").read_text()


def test_genfilt_describe_needs_a_model(tiny_store):
    proc = subprocess.run(
        [sys.executable, "-m", "querylife.cli", "genfilt", "describe", "--catalog", str(tiny_store.catalog_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "genfilt.model" in proc.stderr


def test_genfilt_describe_unreachable_server_is_a_clear_error(tiny_store, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "querylife.cli", "genfilt", "describe", "--catalog", str(tiny_store.catalog_path),
         "--cache", str(tmp_path / "c.jsonl"), "--set", "genfilt.model=m", "--set",
         "genfilt.base_url=http://127.0.0.1:9/v1", "--set", "genfilt.timeout_s=2", "--set", "genfilt.max_retries=0"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "unreachable" in proc.stderr and "127.0.0.1:9" in proc.stderr
    assert not (tmp_path / "c.jsonl").exists() or (tmp_path / "c.jsonl").read_text() == ""


def _judge_cli(tiny_store, out, *args, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "querylife.cli", "genfilt", "judge", "--catalog", str(tiny_store.catalog_path),
         "--pairs", str(tiny_store.pairs_path), "--out", str(out), "--quiet", "--set", "train.batch_size=16", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_genfilt_judge_writes_and_explains_its_flags(tiny_store, tiny_text_model_dir, tmp_path):
    out = tmp_path / "judge"
    proc = _judge_cli(tiny_store, out, "--judge", "guide", "--epochs", "1", "--set",
                      f"genfilt.guide_model={tiny_text_model_dir}", "--set", "genfilt.margin=0.05")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "judge_summary.json").read_text())
    flagged = pd.read_csv(out / "flagged_pairs.csv", keep_default_na=False)
    assert summary["flagged"] == len(flagged) > 0 and summary["epochs"] == 1
    assert summary["true_equivalents"] + summary["labelled_negatives"] + summary["unlabelled"] == len(flagged)
    assert summary["masked_in_training"] == len(flagged) - int(flagged["protected"].sum())
    assert (~flagged["protected"] | flagged["labelled_negative"]).all()  # only labelled negatives are protected
    assert summary["protect_labelled_negatives"] == "all"  # the default: every labelled pair is the user's truth
    assert (flagged["positive_id"] != flagged["product_id"]).all()
    assert "flagged as false negatives" in proc.stdout and "%" in proc.stdout


def test_genfilt_judge_rejects_unknown_judges_and_dead_servers(tiny_store, tiny_text_model_dir, tmp_path):
    proc = _judge_cli(tiny_store, tmp_path / "x", "--judge", "oracle")
    assert proc.returncode == 2 and "--judge must be one of" in proc.stderr
    from querylife.genfilt import DescriptionCache, ProductInput

    cache = tmp_path / "desc.jsonl"
    DescriptionCache(cache).put_many([(ProductInput("p0", "t", "dress"), "a dress")], "stub", "v1")
    proc = _judge_cli(tiny_store, tmp_path / "x", "--judge", "generative", "--set", f"genfilt.cache={cache}",
                      "--set", f"genfilt.guide_model={tiny_text_model_dir}", "--set", "genfilt.model=m",
                      "--set", "genfilt.base_url=http://127.0.0.1:9/v1", "--set", "genfilt.timeout_s=2")
    assert proc.returncode == 2 and "unreachable" in proc.stderr


def test_genfilt_judge_generative_fills_the_answer_cache_once(tiny_store, tiny_text_model_dir, tmp_path):
    """The real CLI against a real OpenAI-compatible server on loopback: answers are asked once, then reused."""
    from test_genfilt_openai import FakeOpenAIServer, stub_descriptions

    catalog = pd.read_parquet(tiny_store.catalog_path)
    catalog["image_path"] = [str(tiny_store.catalog_path.parent / p) for p in catalog["image_path"]]
    cache = tmp_path / "desc.jsonl"
    stub_descriptions(catalog, cache)

    args = ["--judge", "generative", "--epochs", "1", "--set", f"genfilt.cache={cache}",
            "--set", f"genfilt.answers={tmp_path / 'answers.jsonl'}",
            "--set", f"genfilt.guide_model={tiny_text_model_dir}",
            "--set", "genfilt.model=m", "--set", "genfilt.prefilter_margin=0.02",
            "--set", "genfilt.max_questions_per_batch=6",
            "--set", "genfilt.judge_prompt.user='Title: {query} => {product}'"]
    with FakeOpenAIServer(rule=lambda title: "No" if len(title) % 2 else "Yes") as server:
        proc = _judge_cli(tiny_store, tmp_path / "j1", *args, "--set", f"genfilt.base_url={server.url}")
        assert proc.returncode == 0, proc.stderr
        first = json.loads((tmp_path / "j1" / "judge_summary.json").read_text())
        asked = len(server.requests)
        assert asked == first["judge_stats"]["asked"] > 0
        assert first["judge_stats"]["yes"] > 0 and first["judge_stats"]["no"] > 0
        assert "generative model: asked" in proc.stdout
        assert server.requests[0]["messages"][-1]["content"][1]["type"] == "image_url"  # the photo goes along
        proc = _judge_cli(tiny_store, tmp_path / "j2", *args, "--set", f"genfilt.base_url={server.url}")
        assert proc.returncode == 0, proc.stderr
        second = json.loads((tmp_path / "j2" / "judge_summary.json").read_text())
    # Same batches, answers from the cache: only pairs that were over the first run's budget are new questions.
    assert second["judge_stats"]["cache_hits"] >= first["judge_stats"]["yes"] + first["judge_stats"]["no"]
    assert len(server.requests) - asked == second["judge_stats"]["asked"]


def test_genfilt_evaluate_scores_the_generative_judge_against_a_server(tiny_store, tiny_text_model_dir, tmp_path):
    from test_genfilt_openai import FakeOpenAIServer, stub_descriptions

    catalog = pd.read_parquet(tiny_store.catalog_path)
    cache = tmp_path / "desc.jsonl"
    stub_descriptions(catalog, cache)

    with FakeOpenAIServer(rule=lambda title: "yes") as server:
        proc = subprocess.run(
            [sys.executable, "-m", "querylife.cli", "genfilt", "evaluate", "--catalog", str(tiny_store.catalog_path),
             "--pairs", str(tiny_store.pairs_path), "--out", str(tmp_path / "gf"), "--batches", "4",
             "--cache", str(cache), "--set", "train.batch_size=16",
             "--set", f"genfilt.guide_model={tiny_text_model_dir}", "--set", "genfilt.model=m",
             "--set", f"genfilt.base_url={server.url}", "--set", f"genfilt.answers={tmp_path / 'a.jsonl'}",
             "--set", "genfilt.prefilter_margin=0.05", "--set", "genfilt.max_questions_per_batch=3"],
            capture_output=True, text=True, timeout=180, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        assert proc.returncode == 0, proc.stderr
        asked = len(server.requests)
    table = json.loads((tmp_path / "gf" / "genfilt_masks.json").read_text())
    assert set(table) == {"duplicate_title", "gist_guide", "genfilt_similarity", "genfilt_generative"}
    assert table["genfilt_generative"]["asked"] == asked > 0  # at most 3 new questions a batch
    assert asked <= 3 * 4
    assert "yes/no answers from yes-no:openai:" in (tmp_path / "gf" / "genfilt_masks.md").read_text()


def test_genfilt_describe_queries_feeds_the_judges_query_anchor(tiny_store, tiny_text_model_dir, tmp_path):
    from test_genfilt_openai import FakeOpenAIServer, stub_descriptions

    from querylife.config import load_config
    from querylife.data.prepare import prepare_from_config
    from querylife.genfilt.training import build_judge

    cache = tmp_path / "desc.jsonl"
    catalog = pd.read_parquet(tiny_store.catalog_path)
    stub_descriptions(catalog, cache, describer="openai:X:m")

    with FakeOpenAIServer(rule=lambda title: "the intent") as server:
        proc = subprocess.run(
            [sys.executable, "-m", "querylife.cli", "genfilt", "describe", "--queries", "--pairs",
             str(tiny_store.pairs_path), "--cache", str(cache), "--quiet", "--set", "genfilt.model=m",
             "--set", f"genfilt.base_url={server.url}"],
            capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        n_queries = pd.read_parquet(tiny_store.pairs_path)["query"].nunique()
        assert len(server.requests) == n_queries and "queries, prompt q1" in proc.stdout
        assert "Search query:" in server.requests[0]["messages"][-1]["content"]
    records = [json.loads(line) for line in cache.read_text().splitlines()]
    intents = [r for r in records if r["product_id"].startswith("query:")]
    assert len(intents) == n_queries and {r["prompt_version"] for r in intents} == {"q1"}
    # the judge built for training finds them (same describer as the product descriptions)
    cfg = load_config(None, [f"data.catalog={tiny_store.catalog_path}", f"data.pairs={tiny_store.pairs_path}",
                             f"genfilt.cache={cache}", f"genfilt.guide_model={tiny_text_model_dir}"])
    records = [dict(r, describer="openai:X:m") for r in records]  # the stub products' describer name
    cache.write_text("".join(json.dumps(r) + "\n" for r in records))
    judge = build_judge(cfg, prepare_from_config(cfg, progress=False), kind="descriptions")
    assert len(judge.query_descriptions) == n_queries and set(judge.query_descriptions.values()) == {"the intent"}
    assert not any(p.startswith("query:") for p in judge.descriptions)


def test_eval_suite_reports_methods_and_the_genfilt_table(tiny_store, tiny_text_model_dir, tmp_path):
    """Old method names (full, fn_*) still run, under their new names, with a note saying so."""
    out = tmp_path / "suite"
    proc = cli(
        "eval", "--suite", "--methods", "bm25,full,fn_duplicate_title", "--catalog", tiny_store.catalog_path,
        "--pairs", tiny_store.pairs_path, "--out", out, "--quiet", *tiny_overrides(tiny_text_model_dir, epochs=1),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, show(proc)
    assert "'full' was renamed 'querylife'" in proc.stderr and "'fn_duplicate_title' was renamed" in proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["methods"] == ["bm25", "querylife", "mask_duplicate_titles"]
    assert report["baseline"] == "querylife"
    judges = report["meta"]["genfilt"]["judges"]
    assert set(judges) == {"mask_duplicate_titles"} and 0 <= judges["mask_duplicate_titles"]["ndcg@10"] <= 1
    md = (out / "report.md").read_text()
    assert "## GenFilt: false-negative judges" in md and "| no filter (querylife) |" in md
    assert (out / "test_scores.parquet").is_file()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_eval_rejects_unknown_methods_before_any_work(tiny_store, tmp_path):
    proc = cli(
        "eval", "--suite", "--methods", "bm25,nope", "--catalog", tiny_store.catalog_path,
        "--pairs", tiny_store.pairs_path, "--out", tmp_path / "x", cwd=tmp_path,
    )
    assert proc.returncode == 2, show(proc)
    assert "unknown method 'nope'" in proc.stderr and "querylife" in proc.stderr
    assert not (tmp_path / "x").exists()
