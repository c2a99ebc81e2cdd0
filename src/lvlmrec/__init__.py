"""lvlmrec: multimodal recommendation with large vision-language models."""

__version__ = "0.1.0"
