"""HFDescriber plumbing with tiny randomly initialised models built here (the text they write is garbage)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import TINY_DIMS, word_level_tokenizer

from querylife.genfilt.base import DescribeError, Describer, ProductInput, PromptTemplate
from querylife.genfilt.hf import HFDescriber

# Renders typed content parts (vision processors) and plain strings; "\n" via an expression survives trim_blocks.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> {% elif c['type'] == 'text' %}{{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}assistant :{% endif %}"
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny models: thread start-up costs more than it saves, and the test machine is shared.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    """A 2-layer Llama with a tokenizer that has no chat template (plain prompts)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("tiny_llama")
    tok = word_level_tokenizer(["[PAD]", "[UNK]", "<s>", "</s>"], bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        **TINY_DIMS,
    )
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 whose tokenizer has a chat template and no pad token (the describer pads with eos)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path_factory.mktemp("tiny_gpt2")
    tok = word_level_tokenizer(["[UNK]", "<|endoftext|>"], pad_token=None, eos_token="<|endoftext|>")
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(1)
    cfg = GPT2Config(
        vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=512, bos_token_id=1, eos_token_id=1
    )
    GPT2LMHeadModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory) -> Path:
    """A tiny LLaVA (CLIP vision 32 px, 16 image tokens, 2-layer Llama) with a chat-template processor."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    d = tmp_path_factory.mktemp("tiny_llava")
    tok = word_level_tokenizer(
        ["[PAD]", "[UNK]", "<s>", "</s>", "<image>"],
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    torch.manual_seed(2)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=32, patch_size=8, projection_dim=32, **TINY_DIMS),
        text_config=LlamaConfig(
            vocab_size=len(tok),
            num_key_value_heads=2,
            max_position_embeddings=512,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            **TINY_DIMS,
        ),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        pad_token_id=0,
    )
    LlavaForConditionalGeneration(cfg).save_pretrained(d)
    images = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(
        image_processor=images,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    ).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory) -> Path:
    """A tiny BLIP captioner (no chat template: the prompt is a caption prefix; needs an image)."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    d = tmp_path_factory.mktemp("tiny_blip")
    tok = word_level_tokenizer(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]"],
        bert_style=True,
        bos_token="[CLS]",
        eos_token="[SEP]",
        sep_token="[SEP]",
        cls_token="[CLS]",
    )
    torch.manual_seed(3)
    cfg = BlipConfig(
        text_config=dict(
            vocab_size=len(tok),
            max_position_embeddings=512,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            sep_token_id=3,
            encoder_hidden_size=32,
            **TINY_DIMS,
        ),
        vision_config=dict(image_size=32, patch_size=8, **TINY_DIMS),
        projection_dim=32,
    )
    BlipForConditionalGeneration(cfg).save_pretrained(d)
    BlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tok
    ).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("photos")
    out = {}
    for k in range(2):
        pixels = (np.random.default_rng(k).random((40, 40, 3)) * 255).astype("uint8")
        out[f"img{k}"] = str(d / f"img{k}.png")
        Image.fromarray(pixels).save(out[f"img{k}"])
    out["corrupt"] = str(d / "corrupt.png")
    Path(out["corrupt"]).write_bytes(b"this is not a png")
    out["absent"] = str(d / "absent.png")
    return out


ITEMS = [
    ProductInput("p0", "red floral midi dress", "dress"),
    ProductInput("p1", "power bank 20000 mah usb c", "power bank"),
    ProductInput("p2", "usb c cable 2m black white blue green and many more words here", "cable"),
    ProductInput("p3", "blue dress", "dress"),
]
SHORT = PromptTemplate(version="t", system="you describe products .", user="title {title} type {product_type}")


def _spy_generate(describer: HFDescriber) -> list[dict]:
    """Record the keyword arguments of every generate call."""
    calls: list[dict] = []
    real = describer.model.generate

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    describer.model.generate = spy
    return calls


def test_text_plain_prompt_batched_deterministic(llama_dir):
    d = HFDescriber(str(llama_dir), batch_size=3, max_new_tokens=6)
    assert d.name == f"hf:{llama_dir}:text"
    assert isinstance(d, Describer)
    assert d.chat_template is None and d.tokenizer.padding_side == "left"
    out = d.describe_batch(ITEMS, SHORT)
    assert len(out) == len(ITEMS) and all(isinstance(t, str) and t for t in out), out
    assert d.describe_batch(ITEMS, SHORT) == out  # greedy: the same text every time
    assert [d.describe_batch([it], SHORT)[0] for it in ITEMS] == out  # padding does not change the answer
    assert d.describe_batch(ITEMS[::-1], SHORT) == out[::-1]  # one output per input, in order
    assert d.describe_batch([], SHORT) == []


def test_text_chat_template_and_token_cap(gpt2_dir):
    d = HFDescriber(str(gpt2_dir), batch_size=4, max_new_tokens=5)
    assert d.tokenizer.pad_token == "<|endoftext|>"  # no pad token in the checkpoint: eos stands in
    rendered = d._render(ITEMS[0], SHORT, with_image=False)
    assert rendered.startswith("system : you describe products .") and rendered.endswith("assistant :")
    calls = _spy_generate(d)
    out = d.describe_batch(ITEMS, SHORT.model_copy(update={"max_tokens": 3}))
    assert all(isinstance(t, str) for t in out)
    assert calls[0]["max_new_tokens"] == 3  # the prompt's max_tokens when below the describer's cap
    d.describe_batch(ITEMS[:1], SHORT.model_copy(update={"max_tokens": 64}))
    assert calls[-1]["max_new_tokens"] == 5
    assert [d.describe_batch([it], SHORT)[0] for it in ITEMS] == d.describe_batch(ITEMS, SHORT)


def test_empty_generation_is_an_error(llama_dir, monkeypatch):
    d = HFDescriber(str(llama_dir), max_new_tokens=2)
    monkeypatch.setattr(d, "_generate", lambda texts, images, n: ["" for _ in texts])
    out = d.describe_batch(ITEMS[:2], SHORT)
    assert all(isinstance(e, DescribeError) and e.reason == "empty" for e in out)


def test_vision_chat_model_with_and_without_images(llava_dir, images):
    d = HFDescriber(str(llava_dir), kind="vision", batch_size=4, max_new_tokens=5)
    assert d.name.endswith(":vision") and d.chat_template
    items = [
        ProductInput("a", "red floral midi dress", "dress", images["img0"]),
        ProductInput("b", "power bank", "power bank", None),  # no photo: text-only prompt
        ProductInput("c", "usb c cable 2m black", "cable", images["img1"]),
        ProductInput("d", "blue dress", "dress", images["absent"]),  # file not there yet: text-only
        ProductInput("e", "black dress", "dress", images["corrupt"]),  # unreadable: that product fails
    ]
    assert "<image>" in d._render(items[0], SHORT, with_image=True)
    assert "<image>" not in d._render(items[1], SHORT, with_image=False)
    calls = _spy_generate(d)
    out = d.describe_batch(items, SHORT)
    assert [type(o) for o in out] == [str, str, str, str, DescribeError], out
    assert out[4].reason == "bad_image" and "corrupt.png" in str(out[4])
    # Image and text-only prompts go to separate generate calls; only the first gets pixels.
    assert sorted("pixel_values" in c for c in calls) == [False, True]
    with_pixels = next(c for c in calls if "pixel_values" in c)
    assert with_pixels["pixel_values"].shape[0] == 2
    assert d.stats["text_only"] == 2
    singles = [d.describe_batch([it], SHORT)[0] for it in items[:4]]
    assert singles == out[:4]


def test_vision_captioner_prefix_and_missing_image(blip_dir, images):
    d = HFDescriber(str(blip_dir), kind="vision", batch_size=4, max_new_tokens=4)
    assert not d.chat_template and d.pad_free
    prompt = PromptTemplate(version="c", system="", user="a photo of {title}")
    items = [
        ProductInput("a", "red dress", "dress", images["img0"]),
        ProductInput("b", "power bank", "power bank", None),
        ProductInput("c", "usb c cable 2m black", "cable", images["img1"]),
    ]
    out = d.describe_batch(items, prompt)
    assert isinstance(out[0], str) and isinstance(out[2], str)
    assert isinstance(out[1], DescribeError) and out[1].reason == "no_image"
    # Only the new tokens: the echoed caption prefix ("red dress" ...) is cut off.
    enc = d._encode(["a photo of red dress"], [Image.open(images["img0"]).convert("RGB")])
    raw = d.model.generate(**enc, max_new_tokens=4)
    n = enc["input_ids"].shape[1]  # [CLS] a photo of red dress [SEP]: BLIP echoes all but [SEP], then generates
    assert raw[0, 1 : n - 1].tolist() == enc["input_ids"][0, 1 : n - 1].tolist()
    assert out[0] == d.tokenizer.decode(raw[0, n - 1 :], skip_special_tokens=True).strip()
    assert [d.describe_batch([it], prompt)[0] for it in items[::2]] == out[::2]


def test_kind_mismatch_raises_a_clear_error(llama_dir, llava_dir):
    with pytest.raises(ValueError, match="kind='text'"):
        HFDescriber(str(llama_dir), kind="vision")
    with pytest.raises(ValueError, match="kind='vision'"):
        HFDescriber(str(llava_dir), kind="text")
    with pytest.raises(ValueError, match="kind must be"):
        HFDescriber(str(llama_dir), kind="audio")  # type: ignore[arg-type]


def test_yes_no_judge_over_a_local_model(gpt2_dir, monkeypatch):
    """The generative judge's client runs on a local HF model: the question is rendered through the model's chat
    template with the judge's system text, capped at the judge's token budget, and answers map back in order."""
    from querylife.genfilt import JudgePrompt, YesNoClient

    d = HFDescriber(str(gpt2_dir), batch_size=2, max_new_tokens=8)
    calls = _spy_generate(d)
    client = YesNoClient(d, JudgePrompt(max_tokens=2))
    questions = [("red dress", "red floral midi dress", "dress", None), ("power bank", "usb c cable 2m", "cable", None),
                 ("blue dress", "white dress", "dress", None)]
    real = client.ask_many(questions)  # garbage text from a random model: mostly undecided, never an exception
    assert len(real) == 3 and all(a in (True, False, None) for a in real)
    assert calls and all(c["max_new_tokens"] == 2 for c in calls)
    assert client.stats["asked"] == 3
    # the answers come back in the order asked, whatever order the describer generates them in
    answers = {"red floral midi dress": "Yes", "usb c cable 2m": "no.", "white dress": "No"}
    monkeypatch.setattr(d, "_generate", lambda texts, images, n: [next(a for k, a in answers.items() if k in t)
                                                                 for t in texts])
    assert client.ask_many(questions) == [True, False, False]
