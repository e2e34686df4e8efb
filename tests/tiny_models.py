"""Builders shared by the tests' tiny randomly initialised models (no files downloaded, no network)."""

from __future__ import annotations

from pathlib import Path

# Transformer sizes small enough to build and run in milliseconds on a CPU.
TINY_DIMS = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)

WORDS = (
    "red blue green black white pink striped dotted plain checked dress shirt sneakers bag high low "
    "power bank charger cable case usb c 2m 1m mah 10000 20000 w 20 65 phone model x y z summer cotton "
    "fast slim brand new classic women men kids sale"
).split()


def demo_words() -> set[str]:
    """Every word the demo storefront uses for types and attribute values, so the tiny model sees whole words."""
    import re

    from querylife.data.storefront import PRODUCT_TYPES

    words: set[str] = set()
    for spec in PRODUCT_TYPES.values():
        texts = [*spec.query_nouns, *spec.title_nouns, *(v for vals in spec.attributes.values() for v in vals)]
        for text in texts:
            words.update(re.findall(r"[a-z0-9]+", text.lower()))
    return words


def write_vocab(directory: Path) -> list[str]:
    """A word-piece vocab.txt with every demo word whole, plus single characters for the rest."""
    words = sorted(set(WORDS) | demo_words())
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *"abcdefghijklmnopqrstuvwxyz0123456789"]
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return vocab


CORPUS = [
    "product type dress title red floral midi dress describe what this product is user assistant system",
    "power bank 20000 mah usb c cable 2m black white blue green",
    "you describe e-commerce products : , . ! ? photo of a",
]


def word_level_tokenizer(special: list[str], *, bert_style: bool = False, pad_token: str | None = "[PAD]", **kwargs):
    """A word-level tokenizer trained on ``CORPUS`` (no files, no network); ``bert_style`` adds [CLS] .. [SEP];
    ``pad_token=None`` leaves it without one (as GPT-2's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=special))
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    if bert_style:
        ids = [(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")]
        tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=ids)
    if pad_token is not None:
        kwargs["pad_token"] = pad_token
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", **kwargs)
