"""Trained fusions of a text and a vision embedding: attention, gating, cross-modal attention.

The study's fusion nets project both modalities to a hidden size, mix them with learned
weights, and pass the mix through an output projection with LayerNorm; they were trained
with a contrastive loss for 15 epochs, batch 256, with Adam. Here each net learns from
training interactions only, with an in-batch InfoNCE loss, and validation Recall@20 picks
the epoch whose weights are kept. The fused item matrix then scores users like any content
representation (cosine to the mean profile, or max over history items).

Objectives (`objective`), over every training interaction (u, i) of users with two or more
training items, the other pairs of the batch giving the negatives:
  user     (default) u's profile, the mean of the fused embeddings of u's other training
           items, and i are a positive pair: the study's scoring rule, learned directly.
  cooccur  i and another item of u's training history are a positive pair.
In both, an in-batch "negative" that the anchor's user interacted with in training is
dropped from the softmax rather than pushed away. On the demo, `user` gave the higher
validation Recall@20 for all three fusions (docs/representations.md has the figures).

Items lacking one modality (a zero row, e.g. no image) are fused from the other alone;
items lacking both stay zero vectors and never match anything.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from lvlmrec.errors import ConfigError, StageError
from lvlmrec.represent.base import (TrainData, binary_csr, check_choice, check_int, check_number,
                                    l2_normalise)
from lvlmrec.represent.content import ContentRecommender
from lvlmrec.represent.training import EarlyStopping, adam, cpu_threads, seed_everything
from lvlmrec.workdir import atomic_path

OBJECTIVES = ("cooccur", "user")
#: `precision` of the training steps (the fused catalog is always computed in float32)
PRECISIONS = ("float32", "bfloat16")
#: items fused per forward pass when the whole catalog is embedded
_ENCODE_BLOCK = 8192


class FusionNet(nn.Module):
    """Project both modalities to `hidden`, mix them, output projection with LayerNorm.

    mode "attention": softmax over modalities of a learned score per modality token.
    mode "gating": a sigmoid gate per hidden unit from both tokens: g*text + (1-g)*vision.
    mode "cross": multi-head attention over the pair of modality tokens, so each token
    takes in the other (and itself), with a residual and LayerNorm; then averaged.
    """

    MODES = ("attention", "gating", "cross")

    def __init__(self, text_dim: int, vision_dim: int, hidden: int = 256,
                 mode: str = "attention", heads: int = 4, dropout: float = 0.1):
        super().__init__()
        if mode not in self.MODES:
            raise ConfigError(f"fusion mode must be one of {self.MODES}, not {mode!r}")
        self.mode = mode
        self.text_proj = nn.Linear(text_dim, hidden)
        self.vision_proj = nn.Linear(vision_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        if mode == "attention":
            self.attention = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(),
                                           nn.Linear(hidden, 1))
        elif mode == "gating":
            self.gate = nn.Linear(2 * hidden, hidden)
        else:
            self.cross = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
            self.cross_norm = nn.LayerNorm(hidden)
        self.output = nn.Sequential(nn.Linear(hidden, hidden), nn.LayerNorm(hidden))

    def forward(self, text: torch.Tensor, vision: torch.Tensor,
                present: torch.Tensor | None = None) -> torch.Tensor:
        """`present`: (n, 2) bool, whether each row's text / vision is non-zero; computed
        here unless given (a trainer computes it once for the catalog)."""
        if present is None:
            present = modalities_present(text, vision)
        any_present = present.any(1, keepdim=True)
        # an item with neither modality uses both (its output is zeroed below) so that no
        # softmax runs over nothing
        use = present | ~any_present
        tokens = self.dropout(torch.stack([self.text_proj(text), self.vision_proj(vision)], 1))
        if self.mode == "attention":
            logits = self.attention(tokens).squeeze(-1).masked_fill(~use, -math.inf)
            mixed = (torch.softmax(logits, dim=1).unsqueeze(-1) * tokens).sum(1)
        elif self.mode == "gating":
            gate = torch.sigmoid(self.gate(tokens.flatten(1)))
            # a missing modality gets no share of the mix
            gate = torch.where(use[:, 1:], gate, torch.ones_like(gate))
            gate = torch.where(use[:, :1], gate, torch.zeros_like(gate))
            mixed = gate * tokens[:, 0] + (1 - gate) * tokens[:, 1]
        else:
            attended, _ = self.cross(tokens, tokens, tokens, key_padding_mask=~use,
                                     need_weights=False)
            tokens = self.cross_norm(tokens + attended)
            weights = use.float() / use.sum(1, keepdim=True)
            mixed = (weights.unsqueeze(-1) * tokens).sum(1)
        return self.output(mixed) * any_present


class TrainedFusion(ContentRecommender):
    """A fusion net trained contrastively on training interactions (see module docstring).

    The fused, L2-normalised item matrix is `item_vectors_`; `transform` fuses new items
    with the kept weights, which `save` writes to `weights.pt` beside the model.
    """

    label = "trained fusion"
    mode = "attention"

    def __init__(self, text: str = "description", vision: str = "efficientnet",
                 hidden: int = 256, epochs: int = 15, batch_size: int = 256, lr: float = 1e-3,
                 temperature: float = 0.1, objective: str = "user", patience: int = 3,
                 dropout: float = 0.1, heads: int = 4, weight_decay: float = 0.0,
                 scoring: str = "mean", num_threads: int | None = None,
                 precision: str = "float32", seed: int = 0):
        self.text = text
        self.vision = vision
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.temperature = temperature
        self.objective = objective
        self.patience = patience
        self.dropout = dropout
        self.heads = heads
        self.weight_decay = weight_decay
        self.scoring = scoring
        self.num_threads = num_threads  # torch CPU threads while training; None: all cores
        # "bfloat16": training steps under autocast (opt-in; see docs/representations.md)
        self.precision = precision
        self.seed = seed
        self._net: FusionNet | None = None

    # ------------------------------------------------------------------ fitting
    def check_params(self) -> None:
        super().check_params()
        check_choice("objective", self.objective, OBJECTIVES)
        check_choice("precision", self.precision, PRECISIONS)
        for name, low in (("hidden", 1), ("epochs", 1), ("batch_size", 2), ("patience", 1),
                          ("heads", 1)):
            check_int(name, getattr(self, name), low)
        check_number("lr", self.lr, 0.0, strict=True)
        check_number("temperature", self.temperature, 0.0, strict=True)
        check_number("dropout", self.dropout, 0.0, 1.0)
        check_number("weight_decay", self.weight_decay, 0.0)
        if self.mode == "cross" and self.hidden % self.heads:
            raise ConfigError(f"hidden = {self.hidden} must be a multiple of heads = "
                              f"{self.heads} (cross-modal attention splits it across heads)")

    def build_item_matrix(self, data: TrainData) -> np.ndarray:
        self.check_params()
        text = l2_normalise(data.embedding(self.text))
        vision = l2_normalise(data.embedding(self.vision))
        if len(text) != data.n_items or len(vision) != data.n_items:
            raise StageError(
                f"{type(self).__name__}: sources {self.text!r} ({len(text)} rows) and "
                f"{self.vision!r} ({len(vision)} rows) must both have one row per item "
                f"({data.n_items})")
        self.text_dim_, self.vision_dim_ = int(text.shape[1]), int(vision.shape[1])
        with cpu_threads(data.device, self.num_threads):
            self._train(data, text, vision)
        return self.item_vectors_

    def _train(self, data: TrainData, text: np.ndarray, vision: np.ndarray) -> None:
        seed_everything(self.seed)
        rng = np.random.default_rng(self.seed)
        device = torch.device(data.device)
        net = self._new_net().to(device)
        optimiser = adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        inputs = (torch.from_numpy(text).to(device), torch.from_numpy(vision).to(device))
        present = modalities_present(*inputs)
        pairs = _Pairs(data.train, rng)
        stopper = EarlyStopping(patience=self.patience)
        self.train_loss_: list[float] = []
        self.valid_recall_: list[float] = []
        epochs = tqdm(range(self.epochs), desc=f"{type(self).__name__} epochs", unit="epoch",
                      disable=not data.show_progress, leave=False)
        for epoch in epochs:
            net.train()
            total, n_batches = 0.0, 0
            for batch in pairs.batches(self.batch_size):
                with torch.autocast(device.type, dtype=torch.bfloat16,
                                    enabled=self.precision == "bfloat16"):
                    loss = self._loss(net, inputs, present, pairs, batch)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += float(loss.detach())
                n_batches += 1
            self.train_loss_.append(total / max(n_batches, 1))
            self.item_vectors_ = _encode(net, inputs)
            recall = data.valid_recall(self, k=20)
            self.valid_recall_.append(recall)
            epochs.set_postfix(loss=f"{self.train_loss_[-1]:.3f}", recall20=f"{recall:.4f}")
            if stopper.step(epoch, recall, net.state_dict()):
                break
        net.load_state_dict(stopper.best_state)
        self.best_epoch_ = int(stopper.best_epoch)
        self.item_vectors_ = _encode(net, inputs)
        self._net = net.cpu().eval()

    def _loss(self, net: FusionNet, inputs, present: torch.Tensor, pairs: _Pairs,
              batch) -> torch.Tensor:
        users, anchors, partners = batch
        text, vision = inputs

        def fuse(items: np.ndarray) -> torch.Tensor:
            index = torch.as_tensor(items, dtype=torch.long, device=text.device)
            return net(text[index], vision[index], present[index])

        if self.objective == "cooccur":
            query, keys = fuse(anchors), fuse(partners)
            positives = partners
        else:
            # every distinct item of the batch (history items and positives) is fused once
            history = pairs.history_without(users, anchors)
            items, inverse = np.unique(np.concatenate([history.indices, anchors]),
                                       return_inverse=True)
            fused = fuse(items)
            n_hist = len(history.indices)
            weights = torch.zeros((len(users), len(items)), dtype=fused.dtype,
                                  device=text.device)
            rows = np.repeat(np.arange(len(users)), np.diff(history.indptr))
            weights[torch.as_tensor(rows), torch.as_tensor(inverse[:n_hist])] = torch.as_tensor(
                history.data, dtype=fused.dtype)
            query = (weights / weights.sum(1, keepdim=True)) @ F.normalize(fused, dim=1)
            keys = fused[torch.as_tensor(inverse[n_hist:], device=text.device)]
            positives = anchors
        seen = torch.from_numpy(pairs.seen(users, positives)).to(text.device)
        return info_nce(query, keys, self.temperature, seen)

    # ------------------------------------------------------------------ the net
    def _new_net(self) -> FusionNet:
        return FusionNet(self.text_dim_, self.vision_dim_, self.hidden, self.mode,
                         self.heads, self.dropout)

    def transform(self, text: np.ndarray, vision: np.ndarray) -> np.ndarray:
        """Fused, L2-normalised vectors of new items from their two embeddings."""
        if self._net is None:
            raise StageError(f"{type(self).__name__} has no trained weights (fit or load it)")
        inputs = (torch.from_numpy(l2_normalise(text)), torch.from_numpy(l2_normalise(vision)))
        return _encode(self._net, inputs)

    def save(self, path: str | Path) -> list[Path]:
        written = super().save(path)
        if self._net is not None:
            target = Path(path) / "weights.pt"
            with atomic_path(target) as tmp:
                torch.save(self._net.state_dict(), tmp)
            written.append(target)
        return written

    def _load_extra(self, path: Path) -> None:
        weights = path / "weights.pt"
        if weights.is_file():
            net = self._new_net()
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            self._net = net.eval()


class AttentionFusion(TrainedFusion):
    """Softmax attention over the two modalities (the study's attention fusion)."""

    label = "attention fusion"
    mode = "attention"


class GatingFusion(TrainedFusion):
    """A learned sigmoid gate per hidden unit between text and vision (gating fusion)."""

    label = "gating fusion"
    mode = "gating"


class CrossModalFusion(TrainedFusion):
    """The modality tokens attend across modalities (cross-modal attention)."""

    label = "cross-modal attention"
    mode = "cross"


def modalities_present(text: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
    """(n, 2) bool: row i's text, vision embedding is not all zero (the modality exists)."""
    return torch.stack([text.abs().sum(1) > 0, vision.abs().sum(1) > 0], dim=1)


def info_nce(query: torch.Tensor, keys: torch.Tensor, temperature: float,
             exclude: torch.Tensor | None = None) -> torch.Tensor:
    """In-batch InfoNCE: row i's positive is key i, the other keys are negatives.

    `exclude[i, j]` True drops key j from row i's softmax (a known positive, not a negative);
    the diagonal is always kept. Computed in float32 also under bfloat16 autocast: at a
    temperature of 0.1 bfloat16's rounding would move the logits by a few hundredths.
    """
    with torch.autocast(query.device.type, enabled=False):
        logits = F.normalize(query.float(), dim=1) @ F.normalize(keys.float(), dim=1).T
    logits = logits / temperature
    if exclude is not None:
        exclude = exclude.clone()
        exclude.fill_diagonal_(False)
        logits = logits.masked_fill(exclude, -math.inf)
    target = torch.arange(len(query), device=query.device)
    return F.cross_entropy(logits, target)


@torch.no_grad()
def _encode(net: FusionNet, inputs) -> np.ndarray:
    """The whole catalog through the net in eval mode, L2-normalised, as float32 numpy."""
    was_training = net.training
    net.eval()
    text, vision = inputs
    out = [net(text[i:i + _ENCODE_BLOCK], vision[i:i + _ENCODE_BLOCK]).float().cpu()
           for i in range(0, len(text), _ENCODE_BLOCK)]
    net.train(was_training)
    return l2_normalise(torch.cat(out).numpy())


class _Pairs:
    """Training interactions as (user, anchor item, co-interacted item) triples, seeded.

    One epoch visits every training interaction of users with two or more training items
    once, in a random order; each visit draws a fresh partner from the same user's history.
    """

    def __init__(self, train: sp.csr_matrix, rng: np.random.Generator):
        self.train = binary_csr(train)
        self.rng = rng
        self.counts = np.diff(self.train.indptr)
        users = np.repeat(np.arange(self.train.shape[0]), self.counts)
        keep = self.counts[users] >= 2
        if not keep.any():
            raise StageError("no user has two or more training items: a fusion cannot be "
                             "trained on these interactions")
        self.positions = np.flatnonzero(keep)  # indices into train.indices
        self.users = users[keep]

    def batches(self, batch_size: int):
        order = self.rng.permutation(len(self.positions))
        for start in range(0, len(order), batch_size):
            pos = self.positions[order[start:start + batch_size]]
            if len(pos) < 2:  # a lone pair has no negative
                continue
            users = self.users[order[start:start + batch_size]]
            first = self.train.indptr[users]
            n = self.counts[users]
            offset = self.rng.integers(1, n)  # any other item of the same user
            partner = first + (pos - first + offset) % n
            yield users, self.train.indices[pos], self.train.indices[partner]

    def seen(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(len(users), len(items)) bool: user i interacted with item j in training."""
        return self.train[users][:, items].toarray() > 0

    def history_without(self, users: np.ndarray, items: np.ndarray) -> sp.csr_matrix:
        """Training histories of `users` with each row's own held-out item removed."""
        rows = np.arange(len(users))
        held_out = sp.csr_matrix((np.ones(len(users), np.float32), (rows, items)),
                                 shape=(len(users), self.train.shape[1]))
        out = (self.train[users] - held_out).tocsr()
        out.eliminate_zeros()
        return out
