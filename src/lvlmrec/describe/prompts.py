"""Prompts for the LVLM describers: the study's two, and templates from config.

The study used two prompts. Its README names a title-free one (`study_readme`); its
generation script (`scripts/generate_llava_next_summaries.py` in the study's repository)
actually sent a title-conditioned e-commerce prompt (`study_code`, copied verbatim below,
without the `[INST] <image>\\n ... [/INST]` wrapper that the model's chat template adds).
Which one is used matters: with the title in the prompt, a "description" embedding also
carries the title, so comparing it with a title embedding no longer isolates what the
image adds. That is why `include_title` is an explicit setting that must agree with the
template: a template with a `{title}` placeholder needs `include_title: true`, and one
without needs `include_title: false`.

`{title}` is the only placeholder; other braces in a template are kept as written.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

from lvlmrec.errors import ConfigError

TITLE = "{title}"

STUDY_README = (
    "Describe this product image in detail, focusing on visual attributes like color, style, "
    "material, and what occasion it might be suitable for."
)
# The trailing space after "system." is in the study's script; kept so hashes match its text.
STUDY_CODE = (
    "Describe this product in detail for an e-commerce recommendation system. \n"
    "Include: visual appearance, style, color, materials, design features, and any notable "
    "characteristics.\n"
    "Product title: {title}\n"
    "Provide a concise but informative description (2-3 sentences)."
)

# Beyond the study: a structured answer (parsed into per-item attributes, the text source
# `attributes:<describer>`), keywords, and a one-sentence caption (short texts, cheap to write).
STRUCTURED = (
    "Describe the product in this image as a JSON object with the keys \"category\", "
    "\"colours\" (a list, main colour first), \"pattern\", \"material\", \"style\" and "
    "\"occasion\". Answer with the JSON object only."
)
KEYWORDS = (
    "List up to ten keywords for this product: its category, colours, pattern, material and "
    "style. Answer with the keywords only, separated by commas."
)
CAPTION = "Describe this product in one sentence, naming its category and main colour."

BUILTIN_PROMPTS: dict[str, str] = {"study_readme": STUDY_README, "study_code": STUDY_CODE,
                                   "structured": STRUCTURED, "keywords": KEYWORDS,
                                   "caption": CAPTION}
#: prompts whose answers are parsed into attributes (describe/structured.py)
STRUCTURED_PROMPTS = frozenset({"structured"})


@dataclasses.dataclass(frozen=True)
class Prompt:
    """A named template; `include_title` says whether `{title}` is filled in."""

    name: str
    template: str
    include_title: bool

    def text(self, title: str) -> str:
        return self.template.replace(TITLE, title) if self.include_title else self.template

    def texts(self, titles: Sequence[str]) -> list[str]:
        return [self.text(t) for t in titles]


def resolve_prompt(name: str, include_title: bool,
                   custom: Mapping[str, str] | None = None) -> Prompt:
    """The prompt called `name`, built in or from `describe.prompts`, checked against
    `include_title`."""
    custom = dict(custom or {})
    clash = sorted(set(custom) & set(BUILTIN_PROMPTS))
    if clash:
        raise ConfigError(f"describe.prompts: {', '.join(map(repr, clash))} is a built-in "
                          "prompt name; give your template another name")
    known = {**BUILTIN_PROMPTS, **custom}
    if name not in known:
        raise ConfigError(f"describe.prompt: unknown prompt {name!r}; known: "
                          f"{', '.join(sorted(known))} (add templates under describe.prompts)")
    template = known[name]
    if not template.strip():
        raise ConfigError(f"describe.prompts.{name}: the template is empty")
    has_title = TITLE in template
    if has_title and not include_title:
        raise ConfigError(
            f"describe.prompt {name!r} puts the item title in the prompt ({TITLE}) but "
            "describe.include_title is false; set include_title: true (--include-title) to "
            "condition descriptions on titles, or pick a prompt without {title}")
    if include_title and not has_title:
        raise ConfigError(
            f"describe.include_title is true but prompt {name!r} has no {TITLE} placeholder; "
            "add one to the template, or set include_title: false")
    return Prompt(name, template, include_title)


# Where a chat turn ends and the answer begins, in the templates of common LVLMs. A model
# or server that echoes the conversation leaves these in its output; the answer follows
# the last one.
_ANSWER_MARKERS = ("[/INST]", "ASSISTANT:", "Assistant:", "<|im_start|>assistant",
                   "<|assistant|>", "<start_of_turn>model", "### Response:")
# End-of-turn tokens some servers leave in the text; nothing after them is the answer.
_END_MARKERS = ("</s>", "<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>",
                "<end_of_utterance>")
# A bare role line left when special tokens were skipped ("assistant\nThe shirt ...").
_ROLE_LINE = re.compile(r"^(?:assistant|model)[ \t]*:?[ \t]*\n", re.IGNORECASE)


def clean_output(text: str, prompt: str = "") -> str:
    """A model's answer without echoed prompt, chat roles or end tokens, stripped."""
    cut = max((text.rfind(m) + len(m) for m in _ANSWER_MARKERS if m in text), default=0)
    text = text[cut:]
    for marker in _END_MARKERS:
        text = text.split(marker, 1)[0]
    text = _ROLE_LINE.sub("", text.strip())
    prompt = prompt.strip()
    if prompt and text.startswith(prompt):
        text = text[len(prompt):]
    return text.strip()
