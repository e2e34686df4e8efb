"""Image loading: good, missing, corrupt, empty and truncated files; batch loading; normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from querylife.data.errors import BadRows, DataError
from querylife.data.images import ImageDataError, check_image, load_image, load_images, to_float


def png(path: Path, size=(40, 20), colour=(255, 0, 0), mode="RGB") -> str:
    Image.new(mode, size, colour).save(path)
    return str(path)


def test_load_ok_shape_and_colour(tmp_path: Path) -> None:
    arr = load_image(png(tmp_path / "a.png"), 16)
    assert arr.shape == (16, 16, 3) and arr.dtype == np.uint8
    assert np.all(arr[..., 0] == 255) and np.all(arr[..., 1:] == 0)


def test_centre_crop_then_resize(tmp_path: Path) -> None:
    # 30x10: green | red | blue thirds; the centred 10x10 square is the red middle.
    img = Image.new("RGB", (30, 10))
    img.paste((0, 255, 0), (0, 0, 10, 10))
    img.paste((255, 0, 0), (10, 0, 20, 10))
    img.paste((0, 0, 255), (20, 0, 30, 10))
    img.save(tmp_path / "wide.png")
    arr = load_image(tmp_path / "wide.png", 8).astype(int)
    # Bicubic may bleed a little at the crop edges; no real green or blue gets in.
    assert np.abs(arr - [255, 0, 0]).max() <= 12
    assert np.all(arr[:, 2:-2] == [255, 0, 0])


def test_transparency_becomes_white_and_grey_becomes_rgb(tmp_path: Path) -> None:
    arr = load_image(png(tmp_path / "t.png", colour=(0, 0, 0, 0), mode="RGBA"), 4)
    assert np.all(arr == 255)
    arr = load_image(png(tmp_path / "g.png", colour=128, mode="L"), 4)
    assert arr.shape == (4, 4, 3) and np.all(arr == 128)


def test_jpeg_draft_path(tmp_path: Path) -> None:
    Image.new("RGB", (400, 300), (10, 200, 30)).save(tmp_path / "big.jpg", quality=95)
    arr = load_image(tmp_path / "big.jpg", 32)
    assert arr.shape == (32, 32, 3)
    assert np.abs(arr.astype(int) - [10, 200, 30]).max() <= 8


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as ei:
        load_image(tmp_path / "nope.png", 8)
    assert "nope.png" in str(ei.value) and ei.value.kind == "missing"


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty \(0 bytes\)") as ei:
        load_image(tmp_path / "zero.png", 8)
    assert "zero.png" in str(ei.value) and ei.value.kind == "corrupt"


def test_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "junk.jpg").write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(DataError, match="junk.jpg"):
        load_image(tmp_path / "junk.jpg", 8)


def test_truncated_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # Noise does not compress, so cutting the file in half really loses pixel data.
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDataError) as ei:
        load_image(tmp_path / "cut.png", 8)
    assert "cut.png" in str(ei.value) and ei.value.kind == "corrupt"
    with pytest.raises(ImageDataError):
        check_image(tmp_path / "cut.png")
    check_image(tmp_path / "full.png")


def test_load_images_none_and_strict(tmp_path: Path) -> None:
    a = png(tmp_path / "a.png", colour=(0, 0, 255))
    images, has = load_images([a, None, ""], 8)
    assert images.shape == (3, 3, 8, 8) and images.dtype == torch.uint8
    assert has.tolist() == [True, False, False]
    assert images[0, 2].min() == 255 and images[1:].abs().sum() == 0
    with pytest.raises(DataError) as ei:
        load_images([a, str(tmp_path / "missing.png")], 8)
    assert ei.value.row == 2 and ei.value.field == "image_path" and "missing.png" in str(ei.value)


def test_load_images_skip_bad_counts(tmp_path: Path) -> None:
    a = png(tmp_path / "a.png")
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"junk")
    report = BadRows()
    paths = [a, str(tmp_path / "missing.png"), str(tmp_path / "zero.png"), str(tmp_path / "junk.png"), None]
    images, has = load_images(paths, 8, skip_bad=True, report=report)
    assert has.tolist() == [True, False, False, False, False]
    assert images[1:].abs().sum() == 0
    assert dict(report.counts) == {"missing image file": 1, "corrupt image": 2}
    assert [e["row"] for e in report.examples] == [2, 3, 4]


def test_load_images_thread_pool_keeps_order(tmp_path: Path) -> None:
    paths = [png(tmp_path / f"{i}.png", size=(6, 6), colour=(i, 255 - i, 7)) for i in range(48)]
    paths[5] = None
    images, has = load_images(paths, 4, progress=False, num_threads=4)
    assert has.sum() == 47 and not has[5]
    for i in (0, 17, 47):
        assert images[i, 0, 0, 0] == i and images[i, 1, 0, 0] == 255 - i


def test_to_float() -> None:
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(2, 3, 1, 2).contiguous()
    y = to_float(x)
    assert y.dtype == torch.float32 and y.shape == (2, 3, 1, 2)
    assert torch.allclose(y[..., 0], torch.tensor(-1.0)) and torch.allclose(y[..., 1], torch.tensor(1.0))
    z = to_float(x, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert z.max() == 1.0 and z.min() == 0.0
