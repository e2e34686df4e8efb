"""Refactors of the trainer keep training bit for bit: the fingerprint of tests/train_fingerprint.py (recorded before
the one-step refactor; re-recorded on an AVX2 machine from unchanged code, 085f6c7) must come out the same."""

import json
from pathlib import Path

import pytest
import torch
from train_fingerprint import fingerprint

RECORDED = Path(__file__).parent / "data" / "train_fingerprint.json"


def _floats_close(a, b, path="") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _floats_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _floats_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-3, abs=1e-4), path
    elif not (isinstance(a, str) and len(a) == 64):  # weight / score hashes differ with any rounding difference
        assert a == b, path


@pytest.mark.slow
def test_training_fingerprint_is_unchanged(tmp_path):
    recorded = json.loads(RECORDED.read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as recorded: the thread count changes float summation order
    try:
        now = json.loads(json.dumps(fingerprint(tmp_path)))
    finally:
        torch.set_num_threads(threads)
    if now["env"] == recorded["env"]:
        assert now == recorded  # same machine type and torch: bit for bit
    else:  # another torch or CPU: the same numbers up to float rounding
        _floats_close({k: v for k, v in now.items() if k != "env"}, {k: v for k, v in recorded.items() if k != "env"})
