"""A tiny, randomly initialised LLaVA-NeXT checkpoint, built offline in about a second.

No LVLM ships its weights on a registry reachable here, so tests, CPU smoke runs and
benchmarks use this one: a real `LlavaNextForConditionalGeneration` (2-layer Mistral text
model, 2-layer CLIP vision tower, any-resolution tiling) with a complete processor (the
LLaVA-NeXT image processor and a word-level tokenizer built with `tokenizers`, with a
Mistral-style chat template). `--model PATH` then loads it through exactly the code path a
real checkpoint takes. Its outputs are random words, not descriptions.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from lvlmrec.describe.prompts import BUILTIN_PROMPTS

IMAGE_SIZE = 32  # the vision tower's input; 8 px patches
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "[INST]", "[/INST]"]
# Words the random model draws its outputs from (beside the prompts' own words).
PRODUCT_WORDS = """
a an the this is with and of in for on to it its made from features has style look
shirt dress shoe shoes boot boots sneaker sandal heel jacket coat sweater hoodie jeans
pants shorts skirt bag handbag watch ring necklace earrings bracelet hat cap scarf belt
cotton leather denim wool silk linen polyester suede knit lace velvet canvas metal gold
silver red blue green black white grey gray navy pink purple yellow orange brown beige
striped checked floral solid printed plain slim loose fitted casual formal sporty elegant
classic modern vintage summer winter everyday party office wedding beach outdoor sleeve
sleeves collar zipper buttons pocket pockets strap sole toe lightweight soft comfortable
""".split()
# Mistral-style, as in llava-hf/llava-v1.6-mistral-7b-hf: images, then the text, in [INST].
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST] "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %} [/INST]"
    "{% elif message['role'] == 'assistant' %} {{ message['content'][0]['text'] }}</s>"
    "{% endif %}{% endfor %}"
)


def tiny_words() -> list[str]:
    """The lower-cased words and punctuation of the built-in prompts and of products."""
    words = set(PRODUCT_WORDS)
    for template in BUILTIN_PROMPTS.values():
        words.update(re.findall(r"\w+|[^\w\s]", template.lower()))
    return sorted(words)


def word_level_tokenizer(special_tokens: list[str], words: list[str], bos_token: str | None = None,
                         **named_specials: str):
    """A fast tokenizer over whole lower-cased words, built offline with `tokenizers`.

    `special_tokens` come first in the vocabulary and are never split; `named_specials`
    (eos_token=..., pad_token=..., unk_token=...) name some of them. A `bos_token` starts
    every encoded text. Decoding joins words with spaces.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(special_tokens + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=named_specials.get("unk_token")))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(cleanup=True)
    if bos_token is not None:
        backend.post_processor = TemplateProcessing(
            single=f"{bos_token} $A", pair=f"{bos_token} $A $B",
            special_tokens=[(bos_token, vocab[bos_token])])
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t in special_tokens])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos_token,
                                   **named_specials)


def llava_next_parts(tile: int, patch_size: int, pinpoints: list[list[int]],
                     text: dict[str, Any], vision: dict[str, Any], vision_feature_layer: int = -1,
                     vocab_size: int | None = None, image_processor_class: Any = None
                     ) -> tuple[Any, Any, Any]:
    """A LLaVA-NeXT processor, model config and generation config, built offline.

    `tile`-px tiles of `patch_size`-px patches, anyres over `pinpoints`; `text` and `vision`
    are MistralConfig and CLIPVisionConfig arguments. The tokenizer is word-level, padded
    with filler words to `vocab_size` tokens when given (a real vocabulary's size). The
    generation config suppresses the special tokens, so outputs always decode to words.
    """
    from transformers import (
        CLIPVisionConfig,
        GenerationConfig,
        LlavaNextConfig,
        LlavaNextProcessor,
        MistralConfig,
    )

    if image_processor_class is None:
        try:
            from transformers import LlavaNextImageProcessorPil as image_processor_class
        except ImportError:  # transformers 4.x: the PIL-based processor has the plain name
            from transformers import LlavaNextImageProcessor as image_processor_class

    words = tiny_words()
    if vocab_size is not None:
        words += [f"w{i}" for i in range(vocab_size - len(SPECIAL_TOKENS) - len(words))]
    tokenizer = word_level_tokenizer(SPECIAL_TOKENS, words, bos_token="<s>",
                                     eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    vocab = tokenizer.get_vocab()
    ids = {name: vocab[token] for name, token in
           (("bos", "<s>"), ("eos", "</s>"), ("pad", "<pad>"), ("image", "<image>"))}
    image_processor = image_processor_class(
        size={"shortest_edge": tile}, crop_size={"height": tile, "width": tile},
        image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
        vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
        image_token="<image>", num_additional_image_tokens=1)  # CLIP's class token
    text_config = MistralConfig(vocab_size=len(vocab), bos_token_id=ids["bos"],
                                eos_token_id=ids["eos"], pad_token_id=ids["pad"], **text)
    vision_config = CLIPVisionConfig(image_size=tile, patch_size=patch_size, **vision)
    config = LlavaNextConfig(
        text_config=text_config, vision_config=vision_config,
        image_token_index=ids["image"], image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default", vision_feature_layer=vision_feature_layer,
        tie_word_embeddings=False)
    generation_config = GenerationConfig(
        bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"],
        suppress_tokens=[vocab[t] for t in SPECIAL_TOKENS])
    return processor, config, generation_config


def build_tiny_llava_next(path: str | Path, seed: int = 0) -> Path:
    """Write a complete, loadable LLaVA-NeXT checkpoint folder to `path`; returns it.

    Same seed, same weights. Generation never emits special tokens (the checkpoint's
    generation config suppresses them), so every output decodes to at least one word.
    """
    from transformers import LlavaNextForConditionalGeneration

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    processor, config, generation_config = llava_next_parts(
        IMAGE_SIZE, 8,
        [[IMAGE_SIZE, 2 * IMAGE_SIZE], [2 * IMAGE_SIZE, IMAGE_SIZE],
         [2 * IMAGE_SIZE, 2 * IMAGE_SIZE]],
        text={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
              "max_position_embeddings": 1024},
        vision={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "projection_dim": 32})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaNextForConditionalGeneration(config).eval()
    model.generation_config = generation_config
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def idefics_parts() -> tuple[list[str], Any, dict[str, Any]]:
    """Special tokens, tokenizer, and the chat template and config arguments that tiny
    Idefics3 and SmolVLM (the same architecture) share."""
    specials = ["<unk>", "<|begin_of_text|>", "<end_of_utterance>", "<pad>", "<image>",
                "<fake_token_around_image>", "<global-img>",
                *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7))]
    tokenizer = word_level_tokenizer(specials, tiny_words() + ["user", "assistant"],
                                     bos_token="<|begin_of_text|>", unk_token="<unk>",
                                     eos_token="<end_of_utterance>", pad_token="<pad>")
    template = ("{% for m in messages %}{{ m['role'] | capitalize }}:{% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}"
                "{% endfor %}<end_of_utterance>\n{% endfor %}"
                "{% if add_generation_prompt %}Assistant:{% endif %}")
    parts = {
        "chat_template": template,
        "text_config": {"model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": 64,
                        "intermediate_size": 128, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "pad_token_id": 3,
                        "bos_token_id": 1, "eos_token_id": 2},
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
        "scale_factor": 2, "image_token_id": 4, "pad_token_id": 3, "tie_word_embeddings": False}
    return specials, tokenizer, parts


def build_tiny_idefics3(path: str | Path, seed: int = 0) -> Path:
    """A second family for the same tests: a tiny random Idefics3 (Llama text model,
    SigLIP-like vision tower, image splitting, nested image lists, a `User:... Assistant:`
    chat template), written to `path` as a loadable checkpoint folder."""
    from transformers import (
        GenerationConfig,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    path = Path(path)
    specials, tokenizer, parts = idefics_parts()
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(size={"longest_edge": 64},
                                                  max_image_size={"longest_edge": 32}),
        tokenizer=tokenizer, image_seq_len=4, chat_template=parts.pop("chat_template"))
    config = Idefics3Config(**parts)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Idefics3ForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=2, pad_token_id=3,
                                               suppress_tokens=list(range(len(specials))))
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


# --------------------------------------------------------------------------- more families
# Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision and SmolVLM processors hold a video processor, and
# transformers' video processors need torchvision, which cannot be installed beside the
# CPU torch here (it breaks `import transformers`). Their image path does not need it, so
# the tiny models of these families are built in memory with an image-only processor and
# given to `HFDescriber.attach`: everything after loading (chat template, image processing,
# batching, generation, decoding) is the code a real checkpoint runs.
def image_only_processor(cls: type, **parts: Any) -> Any:
    """`cls(**parts)` with no video processor (the class's check would demand one)."""

    class ImageOnly(cls):  # type: ignore[misc, valid-type]
        def check_argument_for_proper_class(self, name: str, arg: Any) -> Any:
            if name == "video_processor" and arg is None:
                return None
            return super().check_argument_for_proper_class(name, arg)

    ImageOnly.__name__ = ImageOnly.__qualname__ = cls.__name__
    return ImageOnly(video_processor=None, **parts)


_QWEN_SPECIALS = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
_QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024}


def _generation_config(eos: int, pad: int, n_specials: int) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig(eos_token_id=eos, pad_token_id=pad,
                            suppress_tokens=list(range(n_specials)))


def _seeded(build, seed: int) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


def tiny_qwen2_vl(version: str = "2", seed: int = 0) -> tuple[Any, Any]:
    """A tiny random Qwen2-VL (`version` "2") or Qwen2.5-VL ("2.5"): (processor, model)."""
    import transformers as tf

    tok = word_level_tokenizer(_QWEN_SPECIALS, tiny_words() + ["user", "assistant"],
                               unk_token="<unk>", eos_token="<|im_end|>",
                               pad_token="<|endoftext|>")
    vocab = tok.get_vocab()
    image_processor = tf.Qwen2VLImageProcessorPil(
        size={"shortest_edge": 4 * 28 * 28, "longest_edge": 16 * 28 * 28}, patch_size=14,
        merge_size=2,
        temporal_patch_size=2)
    ids = {"image_token_id": vocab["<|image_pad|>"], "video_token_id": vocab["<|video_pad|>"],
           "vision_start_token_id": vocab["<|vision_start|>"],
           "vision_end_token_id": vocab["<|vision_end|>"]}
    text = {**_TEXT, "vocab_size": len(vocab),
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}}
    if version == "2":
        processor_cls, config_cls, model_cls = (tf.Qwen2VLProcessor, tf.Qwen2VLConfig,
                                                tf.Qwen2VLForConditionalGeneration)
        vision = {"depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 4,
                  "mlp_ratio": 2}
    else:
        processor_cls, config_cls, model_cls = (tf.Qwen2_5_VLProcessor, tf.Qwen2_5_VLConfig,
                                                tf.Qwen2_5_VLForConditionalGeneration)
        vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 4,
                  "out_hidden_size": 64, "window_size": 56, "fullatt_block_indexes": [1]}
    processor = image_only_processor(processor_cls, image_processor=image_processor,
                                     tokenizer=tok, chat_template=_QWEN_TEMPLATE)
    config = config_cls(text_config=text, vision_config={
        **vision, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
        **ids, eos_token_id=vocab["<|im_end|>"], pad_token_id=1, tie_word_embeddings=False)
    model = _seeded(lambda: model_cls(config), seed)
    model.generation_config = _generation_config(vocab["<|im_end|>"], 1, len(_QWEN_SPECIALS))
    return processor, model


def tiny_llava_onevision(seed: int = 0) -> tuple[Any, Any]:
    """A tiny random LLaVA-OneVision (Qwen2 text model, SigLIP vision tower, anyres)."""
    import transformers as tf

    specials = [*_QWEN_SPECIALS, "<image>", "<video>"]
    tok = word_level_tokenizer(specials, tiny_words() + ["user", "assistant"],
                               unk_token="<unk>", eos_token="<|im_end|>",
                               pad_token="<|endoftext|>")
    vocab = tok.get_vocab()
    template = _QWEN_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>",
                                      "<image>\n")
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    image_processor = tf.LlavaOnevisionImageProcessorPil(
        size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints)
    processor = image_only_processor(
        tf.LlavaOnevisionProcessor, image_processor=image_processor, tokenizer=tok,
        chat_template=template, num_image_tokens=16, vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9")
    config = tf.LlavaOnevisionConfig(
        text_config={**_TEXT, "model_type": "qwen2", "vocab_size": len(vocab)},
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 32,
                       "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
        image_token_index=vocab["<image>"], video_token_index=vocab["<video>"],
        image_grid_pinpoints=pinpoints, vision_feature_select_strategy="full",
        vision_feature_layer=-1, vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=False)
    model = _seeded(lambda: tf.LlavaOnevisionForConditionalGeneration(config), seed)
    model.generation_config = _generation_config(vocab["<|im_end|>"], 1, len(specials))
    return processor, model


def tiny_smolvlm(seed: int = 0) -> tuple[Any, Any]:
    """A tiny random SmolVLM (Llama text model, SigLIP-like tower, image splitting)."""
    import transformers as tf

    specials, tok, parts = idefics_parts()
    processor = image_only_processor(
        tf.SmolVLMProcessor, image_processor=tf.SmolVLMImageProcessorPil(
            size={"longest_edge": 64}, max_image_size={"longest_edge": 32}),
        tokenizer=tok, image_seq_len=4, chat_template=parts.pop("chat_template"))
    config = tf.SmolVLMConfig(**parts)
    model = _seeded(lambda: tf.SmolVLMForConditionalGeneration(config), seed)
    model.generation_config = _generation_config(2, 3, len(specials))
    return processor, model


TINY_FAMILIES = {"qwen2_vl": lambda: tiny_qwen2_vl("2"), "qwen2_5_vl": lambda: tiny_qwen2_vl("2.5"),
                 "llava_onevision": tiny_llava_onevision, "smolvlm": tiny_smolvlm}
