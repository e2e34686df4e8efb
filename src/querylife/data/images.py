"""Image loading: decode, fix orientation, flatten transparency, centre-crop to a square and resize.

Resizing is **centre-crop then resize** (bicubic), as CLIP-style vision towers were pre-trained on: the
largest centred square is cut out and scaled to ``size x size``. Images with an alpha channel are composited
on white, the usual background of product photos (a plain RGB conversion would expose whatever colour
transparent pixels happen to store, often black). EXIF orientation is applied so phone photos are upright.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import BadRows, DataError

__all__ = ["ImageDataError", "check_image", "decode_image_bytes", "load_image", "load_images", "to_float"]

# Below this many images a thread pool costs more than it saves.
_POOL_MIN = 32


class ImageDataError(DataError):
    """An image that cannot be used; ``kind`` is ``"missing"`` (no such file), ``"corrupt"`` (empty,
    truncated, not an image, unreadable) or ``"too_large"`` (over a pixel limit)."""

    def __init__(self, message: str, *, kind: str, file: str | None = None, field: str | None = None) -> None:
        self.kind = kind
        super().__init__(message, file=file, field=field)


def _open(path: str | os.PathLike, draft: int | None = None) -> Image.Image:
    """Open and fully decode ``path``; raise :class:`ImageDataError` for every way it can fail.

    ``draft``: let the JPEG decoder scale down by a power of two while keeping both sides >= ``draft``
    (decoding a 2000 px photo for a 224 px input is otherwise most of the loading time).
    """
    p = os.fspath(path)
    if "://" in p:
        raise ImageDataError("an image URL: load_images reads local files; URLs are fetched into a cache by "
                             "querylife.data.image_urls (data.download_images=true)", kind="missing", file=p)
    try:
        nbytes = os.path.getsize(p)
    except FileNotFoundError:
        raise ImageDataError("image file not found", kind="missing", file=p) from None
    except OSError as e:
        raise ImageDataError(f"cannot access image file: {e.strerror or e}", kind="corrupt", file=p) from None
    if os.path.isdir(p):
        raise ImageDataError("image path is a directory", kind="corrupt", file=p)
    if nbytes == 0:
        raise ImageDataError("image file is empty (0 bytes)", kind="corrupt", file=p)
    try:
        img = Image.open(p)
        if draft is not None and img.format == "JPEG":
            img.draft("RGB", (draft, draft))
        img.load()  # decode now: Image.open only reads the header, truncation shows up here
    except Image.UnidentifiedImageError:
        raise ImageDataError("not an image file PIL can read", kind="corrupt", file=p) from None
    except Exception as e:  # truncated data, bad CRC, decompression bomb, permissions...: all unusable
        msg = f"cannot decode image: {type(e).__name__}: {e}"
        raise ImageDataError(msg, kind="corrupt", file=p) from None
    return img


def check_image(path: str | os.PathLike) -> None:
    """Raise :class:`ImageDataError` unless ``path`` is an image PIL can fully decode."""
    _open(path).close()


def _to_rgb(img: Image.Image) -> Image.Image:
    img = ImageOps.exif_transpose(img) or img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")
    return img


def _square_rgb(img: Image.Image, size: int, file: str | None) -> np.ndarray:
    """A decoded image -> ``(size, size, 3)`` uint8: orientation, transparency on white, centre crop, resize."""
    try:
        rgb = _to_rgb(img)
        out = ImageOps.fit(rgb, (size, size), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))
        arr = np.array(out, dtype=np.uint8)  # writable copy: torch.from_numpy warns on read-only arrays
    except Exception as e:
        msg = f"cannot convert image: {type(e).__name__}: {e}"
        raise ImageDataError(msg, kind="corrupt", file=file) from None
    finally:
        img.close()
    if arr.shape != (size, size, 3):  # defensive: odd modes (e.g. 16-bit) must not slip through silently
        raise ImageDataError(f"unexpected decoded shape {arr.shape}", kind="corrupt", file=file)
    return arr


def _decode(path: str | os.PathLike, size: int) -> np.ndarray:
    p = os.fspath(path)
    return _square_rgb(_open(p, draft=size), size, p)


def decode_image_bytes(data: bytes, size: int, *, max_pixels: int) -> np.ndarray:
    """Decode an encoded image held in memory (e.g. sent to the service) exactly as :func:`load_image` decodes a
    file: ``(size, size, 3)`` uint8 RGB.

    ``max_pixels`` guards against decompression bombs: the declared width x height is read from the header and
    refused before any pixel is decoded (a few hundred bytes of PNG can declare a 100,000 x 100,000 image).

    Example::

        arr = decode_image_bytes(open("photo.jpg", "rb").read(), 224, max_pixels=40_000_000)   # (224, 224, 3)

    Raises:
        ImageDataError: ``kind="corrupt"`` for empty, truncated or non-image bytes; ``kind="too_large"`` over
            ``max_pixels``.
    """
    import io

    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if not data:
        raise ImageDataError("image is empty (0 bytes)", kind="corrupt")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:
        raise ImageDataError("not an image PIL can read", kind="corrupt") from None
    except Image.DecompressionBombError as e:  # PIL's own guard (twice Image.MAX_IMAGE_PIXELS)
        raise ImageDataError(f"image too large: {e}", kind="too_large") from None
    except Exception as e:
        raise ImageDataError(f"cannot read image: {type(e).__name__}: {e}", kind="corrupt") from None
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise ImageDataError(
            f"image declares {width} x {height} = {width * height} pixels, over the limit of {max_pixels}",
            kind="too_large",
        )
    try:
        if img.format == "JPEG":
            img.draft("RGB", (size, size))
        img.load()
    except Exception as e:  # truncated data, bad CRC, ...
        img.close()
        raise ImageDataError(f"cannot decode image: {type(e).__name__}: {e}", kind="corrupt") from None
    return _square_rgb(img, size, None)


def load_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """Load one image as a ``(size, size, 3)`` uint8 RGB array (centre crop, then bicubic resize).

    Raises:
        DataError: (an :class:`ImageDataError`) naming the file when it is missing, empty, truncated, corrupt
            or not an image.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    return _decode(path, size)


def load_images(
    paths: Sequence[str | os.PathLike | None],
    size: int,
    *,
    skip_bad: bool = False,
    report: BadRows | None = None,
    progress: bool = False,
    num_threads: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load many images into one tensor.

    Args:
        paths: one entry per product; ``None`` (or empty) means "no image".
        size: side of the square output.
        skip_bad: treat a bad file as "no image" (and count it in ``report``) instead of raising.
        report: tally of bad images (reasons ``missing image file`` / ``corrupt image``; ``row`` is the
            1-based position in ``paths``).
        progress: show a tqdm progress bar.
        num_threads: decoding threads (default: up to 8, bounded by the CPU count); PIL releases the GIL
            while decoding, so threads scale.

    Returns:
        ``images``: uint8 ``(N, 3, size, size)``, zeros where there is no image; ``has_image``: bool ``(N,)``.

    Raises:
        DataError: for the first bad file (in ``paths`` order) unless ``skip_bad``.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    n = len(paths)
    images = torch.zeros((n, 3, size, size), dtype=torch.uint8)
    has_image = torch.zeros(n, dtype=torch.bool)
    todo = [(i, os.fspath(p)) for i, p in enumerate(paths) if p is not None and os.fspath(p).strip()]

    def work(item: tuple[int, str]) -> tuple[int, str, ImageDataError | None]:
        i, p = item
        try:
            arr = _decode(p, size)
        except ImageDataError as e:
            return i, p, e
        # Each task writes its own slot, so threads never touch the same memory.
        images[i] = torch.from_numpy(arr).permute(2, 0, 1)
        has_image[i] = True
        return i, p, None

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="images", unit="img")
    threads = num_threads or min(8, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(max_workers=threads) if len(todo) >= _POOL_MIN and threads > 1 else None
    try:
        results = pool.map(work, todo) if pool is not None else map(work, todo)
        for i, p, err in results:
            if bar is not None:
                bar.update(1)
            if err is None:
                continue
            if not skip_bad:
                raise DataError(err.detail, file=p, row=i + 1, field="image_path")
            if report is not None:
                reason = "missing image file" if err.kind == "missing" else "corrupt image"
                report.add(reason, file=p, row=i + 1, field="image_path", message=err.detail)
    finally:
        if pool is not None:
            # On error do not wait for thousands of queued decodes.
            pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    return images, has_image


def to_float(
    images_uint8: torch.Tensor,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
) -> torch.Tensor:
    """``(N, 3, H, W)`` (or ``(3, H, W)``) uint8 -> float32 scaled to [0, 1], then ``(x - mean) / std``."""
    x = images_uint8.to(torch.float32).div_(255.0)
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    return (x - m) / s
