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
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(size={"longest_edge": 64},
                                                  max_image_size={"longest_edge": 32}),
        tokenizer=tokenizer, image_seq_len=4, chat_template=template)
    config = Idefics3Config(
        text_config={"model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": 64,
                     "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "pad_token_id": 3, "bos_token_id": 1,
                     "eos_token_id": 2},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
        scale_factor=2, image_token_id=4, pad_token_id=3, tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Idefics3ForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=2, pad_token_id=3,
                                               suppress_tokens=list(range(len(specials))))
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
