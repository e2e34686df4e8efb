"""Shared fixtures: tiny models built in the test session (no network) and a tiny demo storefront."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tiny_models import TINY_DIMS, write_vocab

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_text_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT with a small word-piece vocabulary, saved like a hub checkpoint."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory = tmp_path_factory.mktemp("tiny_bert")
    vocab = write_vocab(directory)
    config = BertConfig(
        vocab_size=len(vocab),
        max_position_embeddings=64,
        **TINY_DIMS,
    )
    BertModel(config).save_pretrained(directory)
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A randomly initialised tiny CLIP (text + vision) with a word-piece tokenizer."""
    from transformers import BertTokenizerFast, CLIPConfig, CLIPModel

    directory = tmp_path_factory.mktemp("tiny_clip")
    vocab = write_vocab(directory)
    config = CLIPConfig(
        text_config=dict(
            **TINY_DIMS,
            vocab_size=len(vocab),
            max_position_embeddings=64,
            eos_token_id=3,
            bos_token_id=2,
            pad_token_id=0,
        ),
        vision_config=dict(
            **TINY_DIMS,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(directory)
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    """A small demo storefront (generated once per session)."""
    from querylife.data.storefront import DemoConfig, generate_demo

    return generate_demo(
        tmp_path_factory.mktemp("store") / "demo", DemoConfig(n_products=240, seed=3, image_size=32), progress=False
    )


@pytest.fixture()
def tiny_config(tiny_text_model_dir, tiny_store):
    """An experiment config with the tiny text model and a tiny CNN, for fast end-to-end training."""
    from querylife.config import load_config

    return load_config(
        None,
        [
            f"data.catalog={tiny_store.catalog_path}",
            f"data.pairs={tiny_store.pairs_path}",
            f"model.tower.text_model={tiny_text_model_dir}",
            "model.tower.vision_model=small_cnn",  # not the default Lite0: a trained tiny CNN keeps tests fast
            "model.tower.small_cnn.channels=[8,16]",
            "model.tower.small_cnn.image_size=32",
            "model.embed_dim=16",
            "train.epochs=2",
            "train.batch_size=16",
            "train.eval_batch_size=64",
        ],
    )
