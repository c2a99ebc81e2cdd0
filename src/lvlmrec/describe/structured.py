"""Attributes from a structured-prompt answer: JSON, as well as a model manages to write it.

LVLMs asked for JSON wrap it in a Markdown fence, add a sentence before or after, stop
mid-object at `max_new_tokens`, use single quotes, or name keys their own way ("color",
"colors", "main_colour"). `parse_attributes` takes what it can from all of that and never
raises: a field it cannot find is absent. The parsed attributes are stored beside the text
and rendered as one short text (`render_attributes`), the text source `attributes:<name>`.
"""

from __future__ import annotations

import json
import re
from typing import Any

FIELDS = ("category", "colours", "pattern", "material", "style", "occasion")
# other spellings models use for the fields
_ALIASES = {"colour": "colours", "color": "colours", "colors": "colours",
            "main_colour": "colours", "main_color": "colours", "primary_color": "colours",
            "type": "category", "product": "category", "product_type": "category",
            "materials": "material", "fabric": "material", "patterns": "pattern",
            "print": "pattern", "occasions": "occasion", "styles": "style"}
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.DOTALL)
# "key": value pairs, for objects that do not parse as a whole (cut off, single quotes)
_PAIR = re.compile(r"""["']?([A-Za-z_ ]+)["']?\s*:\s*(\[[^\]]*\]?|"[^"]*"?|'[^']*'?|[^,}\n]+)""")


def _field(key: str) -> str | None:
    key = key.strip().lower().replace(" ", "_").replace("-", "_")
    key = _ALIASES.get(key, key)
    return key if key in FIELDS else None


def _clean_value(field: str, value: Any) -> Any:
    """A string (a list of strings for colours), lower-cased and stripped; None if empty."""
    if isinstance(value, dict):
        value = list(value.values())
    if field == "colours":
        items = value if isinstance(value, list) else re.split(r",|/|\band\b", str(value))
        colours = [str(v).strip(" '\"").lower() for v in items if v is not None]
        colours = [c for c in colours if c]
        return colours or None
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value if v is not None)
    if value is None:
        return None
    text = str(value).strip(" '\"\n").lower()
    return text if text and text not in ("null", "none", "n/a", "unknown") else None


def _candidates(text: str) -> list[str]:
    """Places the JSON may be: fenced blocks, then the outermost {...} (or to the end)."""
    out = [m.group(1) for m in _FENCE.finditer(text)]
    start = text.find("{")
    if start >= 0:
        end = text.rfind("}")
        out.append(text[start:end + 1] if end > start else text[start:])
    out.append(text)
    return out


def _loads(chunk: str) -> dict[str, Any] | None:
    chunk = chunk.strip()
    start = chunk.find("{")
    if start < 0:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(chunk[start:])  # trailing text is ignored
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def parse_attributes(text: str | None) -> dict[str, Any]:
    """The fields of `FIELDS` found in a model's answer (any subset; {} when none)."""
    if not text:
        return {}
    raw: dict[str, Any] | None = None
    for chunk in _candidates(text):
        raw = _loads(chunk)
        if raw is not None:
            break
    if raw is None:  # cut off or not quite JSON: take the key: value pairs that are there
        raw = {}
        body = next((c for c in _candidates(text) if "{" in c or ":" in c), text)
        for key, value in _PAIR.findall(body):
            value = value.strip()
            if value.startswith("["):
                quoted = re.findall(r"""["']([^"']+)["']""", value)  # a cut-off one is not
                value = quoted if quoted else [v.strip() for v in value.strip("[]").split(",")]
            raw.setdefault(key, value)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        field = _field(str(key))
        if field and field not in out:
            cleaned = _clean_value(field, value)
            if cleaned is not None:
                out[field] = cleaned
    return out


def render_attributes(attributes: dict[str, Any]) -> str:
    """One short text of the attributes, in field order: what `attributes:<name>` encodes."""
    parts = []
    for field in FIELDS:
        value = attributes.get(field)
        if value:
            parts.append(f"{field}: {', '.join(value) if isinstance(value, list) else value}")
    return "; ".join(parts)
