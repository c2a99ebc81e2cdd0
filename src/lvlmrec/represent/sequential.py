"""Sequential recommenders: the next item from a user's history read in time order.

`sasrec` (Kang & McAuley, ICDM 2018: a causal self-attention encoder) and `gru4rec`
(Hidasi et al., ICLR 2016: a GRU) share everything but the encoder. Both declare
`needs_order`, so the evaluator passes `history_order` (positions 1..n by timestamp, ties by
the data's row order) and a dataset without timestamps is a config error before any fit.

Item inputs (`input`): `id` (a learned embedding per item), `content` (a frozen `text` or
`vision` source, both concatenated when both are set, through a trained linear projection:
an item never seen in training still gets a vector) or `id+content` (their sum). The same
item table scores the output (tied weights), so content reaches the ranking too.

Training: every user's train items in time order; each position predicts the next item.
A history longer than `max_len` is cut into windows of `max_len` + 1 items from the most
recent backwards for training, and truncated to its `max_len` most recent items when
scoring. Loss `ce` (default) is the full softmax over all items (Petrov & Macdonald, RecSys
2023: it beats sampled losses for SASRec); `bce` is the original one-negative-per-position
binary cross-entropy. Early stopping on validation Recall@20 keeps the best epoch. A user
with one train item contributes no training pair but is scored from that item; a user with
no history gets all-zero scores (ties, broken by the evaluator's seeded coin).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from lvlmrec.errors import ConfigError, StageError
from lvlmrec.represent.base import (
    Recommender,
    TrainData,
    check_choice,
    check_int,
    check_number,
    top_k,
)
from lvlmrec.represent.training import EarlyStopping, seed_everything, torch_threads
from lvlmrec.workdir import atomic_path

INPUTS = ("id", "content", "id+content")
LOSSES = ("ce", "bce")


# --------------------------------------------------------------------------- sequences
def ordered_rows(history: sp.csr_matrix, order: sp.csr_matrix | None) -> list[np.ndarray]:
    """Each row's item ids oldest first: by `order`'s positions, or without it in the
    CSR's stored column order."""
    src = sp.csr_matrix(order if order is not None else history)
    out = []
    for r in range(src.shape[0]):
        lo, hi = src.indptr[r], src.indptr[r + 1]
        items = src.indices[lo:hi].astype(np.int64)
        if order is not None:
            items = items[np.argsort(src.data[lo:hi], kind="stable")]
        out.append(items)
    return out


def user_sequence(history: sp.csr_matrix, order: sp.csr_matrix | None, user: int
                  ) -> np.ndarray:
    """One user's history items oldest first (without `order`: by item id), the sequence a
    sequential model's `recommend` reads; set-based models get the same set."""
    if order is None:
        return history.indices[history.indptr[user]:history.indptr[user + 1]].astype(np.int64)
    return ordered_rows(order[user], order[user])[0]


def latest_unique(items) -> np.ndarray:
    """Items as given (oldest first) with each repeat kept at its last position, like the
    data's own `order_matrix`."""
    items = np.asarray(items, dtype=np.int64)
    _, last_from_end = np.unique(items[::-1], return_index=True)
    return items[np.sort(len(items) - 1 - last_from_end)]


def left_pad(seqs: list[np.ndarray], length: int) -> np.ndarray:
    """(len(seqs), length) int64 tokens (item id + 1), the most recent `length` items right
    aligned, 0 = padding."""
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for r, s in enumerate(seqs):
        s = s[-length:]
        if len(s):
            out[r, length - len(s):] = s + 1
    return out


def training_windows(seqs: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of every window of at most `max_len` + 1 items, cut from the most
    recent end backwards; sequences of one item give none."""
    windows = []
    for s in seqs:
        end = len(s)
        while end >= 2:
            start = max(0, end - max_len - 1)
            windows.append(s[start:end])
            end = start + 1 if start > 0 else 0
    if not windows:
        return np.zeros((0, max_len), np.int64), np.zeros((0, max_len), np.int64)
    return (left_pad([w[:-1] for w in windows], max_len),
            left_pad([w[1:] for w in windows], max_len))


# --------------------------------------------------------------------------- networks
class _ItemTable(nn.Module):
    """Token (item + 1, 0 = padding) -> vector: id embedding, projected content, or both."""

    def __init__(self, n_items: int, hidden: int, mode: str, content: np.ndarray | None):
        super().__init__()
        self.mode = mode
        self.id = nn.Embedding(n_items + 1, hidden, padding_idx=0) if "id" in mode else None
        if self.id is not None:
            nn.init.normal_(self.id.weight, std=0.02)
            with torch.no_grad():
                self.id.weight[0].zero_()
        if "content" in mode:
            table = np.zeros((n_items + 1, content.shape[1]), np.float32)
            table[1:] = content
            self.register_buffer("content", torch.from_numpy(table))
            self.proj = nn.Linear(content.shape[1], hidden)
        else:
            self.content, self.proj = None, None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out = 0
        if self.id is not None:
            out = self.id(tokens)
        if self.proj is not None:
            out = out + self.proj(self.content[tokens])
        return out * (tokens > 0).unsqueeze(-1)

    def all_items(self) -> torch.Tensor:
        """(n_items, hidden): every real item's vector (the output side too)."""
        tokens = torch.arange(1, self._n_tokens(), device=self._device())
        return self.forward(tokens)

    def _n_tokens(self) -> int:
        return (self.id.num_embeddings if self.id is not None else self.content.shape[0])

    def _device(self) -> torch.device:
        return next(self.parameters()).device


class _Block(nn.Module):
    """Pre-norm self-attention block."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(hidden, hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.ln1(x)
        x = x + self.drop(self.attn(y, y, y, attn_mask=mask, need_weights=False)[0])
        return x + self.drop(self.ff(self.ln2(x)))


class _SASRec(nn.Module):
    def __init__(self, items: _ItemTable, max_len: int, hidden: int, n_layers: int,
                 n_heads: int, dropout: float):
        super().__init__()
        self.items, self.n_heads = items, n_heads
        self.pos = nn.Embedding(max_len, hidden)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(hidden, n_heads, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(hidden)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        pad = tokens == 0
        x = self.drop(self.items(tokens) + self.pos.weight[:length]) * (~pad).unsqueeze(-1)
        # causal, and padding keys hidden; a position may always see itself (no empty row)
        ar = torch.arange(length, device=tokens.device)
        mask = (ar[None, :] > ar[:, None])[None] | pad[:, None, :]
        mask = mask & ~torch.eye(length, dtype=torch.bool, device=tokens.device)[None]
        mask = mask.repeat_interleave(self.n_heads, dim=0)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


class _GRU4Rec(nn.Module):
    def __init__(self, items: _ItemTable, hidden: int, n_layers: int, dropout: float):
        super().__init__()
        self.items = items
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(hidden, hidden, n_layers, batch_first=True,
                          dropout=dropout if n_layers > 1 else 0.0)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.gru(self.drop(self.items(tokens)))[0]


# --------------------------------------------------------------------------- models
class SequentialRecommender(Recommender):
    """Shared fit/score/save of the sequential kinds (module docstring)."""

    needs_order: ClassVar[bool] = True
    arch: ClassVar[str] = ""

    def __init__(self, input: str = "id", text: str | None = None, vision: str | None = None,
                 max_len: int = 50, n_layers: int = 2, n_heads: int = 2, hidden: int = 64,
                 dropout: float = 0.2, loss: str = "ce", epochs: int = 100,
                 batch_size: int = 128, learning_rate: float = 1e-3, patience: int = 5,
                 num_threads: int | None = None, seed: int = 0):
        self.input = input
        self.text = text
        self.vision = vision
        self.max_len = max_len
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.hidden = hidden
        self.dropout = dropout
        self.loss = loss
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.num_threads = num_threads
        self.seed = seed

    def check_params(self) -> None:
        check_choice("input", self.input, INPUTS)
        check_choice("loss", self.loss, LOSSES)
        for name in ("max_len", "n_layers", "n_heads", "hidden", "epochs", "batch_size",
                     "patience"):
            check_int(name, getattr(self, name))
        check_int("num_threads", self.num_threads, allow_none=True)
        check_number("dropout", self.dropout, 0.0, 0.95)
        check_number("learning_rate", self.learning_rate, 0.0, strict=True)
        if "content" in self.input and not (self.text or self.vision):
            raise ConfigError(f"input = {self.input!r} needs a content source: set `text` "
                              "or `vision`")
        if self.arch == "sasrec" and self.hidden % self.n_heads:
            raise ConfigError(f"hidden = {self.hidden} must be a multiple of n_heads = "
                              f"{self.n_heads}")

    @property
    def n_items(self) -> int:
        return int(self.n_items_)

    # ------------------------------------------------------------------ network
    def _network(self, n_items: int, content: np.ndarray | None) -> nn.Module:
        items = _ItemTable(n_items, self.hidden, self.input, content)
        if self.arch == "sasrec":
            return _SASRec(items, self.max_len, self.hidden, self.n_layers, self.n_heads,
                           self.dropout)
        return _GRU4Rec(items, self.hidden, self.n_layers, self.dropout)

    def _content(self, data: TrainData) -> np.ndarray | None:
        if "content" not in self.input:
            return None
        parts = [np.asarray(data.embedding(s), np.float32) for s in (self.text, self.vision)
                 if s]
        return np.concatenate(parts, axis=1)

    # ------------------------------------------------------------------ fit
    def fit(self, data: TrainData) -> SequentialRecommender:
        self.check_params()
        if data.train_order is None:
            raise ConfigError(f"kind {self.arch!r} orders each history by time, but the "
                              "dataset has no timestamps")
        seed_everything(self.seed)
        device = torch.device(data.device)
        content = self._content(data)
        self.n_items_ = data.n_items
        if content is not None:
            self.content_ = content
        with torch_threads(self.num_threads):
            self._module = self._network(data.n_items, content).to(device)
            self._train(data, device)
        self.item_vectors_ = self._item_table()
        return self

    def _train(self, data: TrainData, device: torch.device) -> None:
        inputs, targets = training_windows(ordered_rows(data.train, data.train_order),
                                           self.max_len)
        module = self._module
        opt = torch.optim.Adam(module.parameters(), lr=self.learning_rate)
        rng = np.random.default_rng(self.seed)
        stopper = EarlyStopping(patience=self.patience)
        for epoch in range(self.epochs):
            module.train()
            perm = rng.permutation(len(inputs))
            for start in range(0, len(perm), self.batch_size):
                batch = perm[start:start + self.batch_size]
                x = torch.from_numpy(inputs[batch]).to(device)
                y = torch.from_numpy(targets[batch]).to(device)
                loss = self._loss(module, x, y, rng)
                opt.zero_grad()
                loss.backward()
                opt.step()
            module.eval()
            if stopper.step(epoch, data.valid_recall(self), module.state_dict()):
                break
        if stopper.best_state is not None:
            module.load_state_dict(stopper.best_state)
        module.eval()
        self.best_epoch_ = int(stopper.best_epoch)
        self.valid_recall_ = float(stopper.best_score) if stopper.history else 0.0

    def _loss(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor,
              rng: np.random.Generator) -> torch.Tensor:
        h = module(x)[y > 0]  # (n, hidden) states that have a next item
        target = y[y > 0] - 1
        table = module.items.all_items()
        if self.loss == "ce":
            return nn.functional.cross_entropy(h @ table.T, target)
        neg = torch.from_numpy(rng.integers(0, table.shape[0], size=len(target))).to(h.device)
        pos_logit = (h * table[target]).sum(-1)
        neg_logit = (h * table[neg]).sum(-1)
        return -(nn.functional.logsigmoid(pos_logit)
                 + nn.functional.logsigmoid(-neg_logit)).mean()

    # ------------------------------------------------------------------ score
    @torch.no_grad()
    def _item_table(self) -> np.ndarray:
        return self._module.items.all_items().detach().cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def score(self, user_ids: np.ndarray, history: sp.csr_matrix,
              history_order: sp.csr_matrix | None = None) -> np.ndarray:
        """Scores from each user's last `max_len` items in time order (`history_order`;
        without it, the CSR's column order)."""
        seqs = ordered_rows(history, history_order)
        return self._score_sequences(seqs)

    @torch.no_grad()
    def _score_sequences(self, seqs: list[np.ndarray]) -> np.ndarray:
        module = self._module
        module.eval()
        device = next(module.parameters()).device
        table = module.items.all_items()
        out = np.zeros((len(seqs), self.n_items), dtype=np.float32)
        with torch_threads(self.num_threads):
            for start in range(0, len(seqs), 512):
                block = seqs[start:start + 512]
                tokens = torch.from_numpy(left_pad(block, self.max_len)).to(device)
                last = module(tokens)[:, -1]
                scores = (last @ table.T).cpu().numpy()
                empty = np.array([len(s) == 0 for s in block])
                scores[empty] = 0.0
                out[start:start + len(block)] = scores
        return out

    def recommend(self, history_items, k: int = 10, user_id: int = -1,
                  exclude_history: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-k from `history_items` read in the given order (oldest first)."""
        items = np.asarray(history_items, dtype=np.int64)
        scores = self._score_sequences([items])[0].astype(np.float64)
        if exclude_history and len(items):
            scores[items] = -np.inf
        return top_k(scores, k)

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | Path) -> list[Path]:
        """Also writes the torch weights of the kept epoch to `weights.pt`."""
        written = super().save(path)
        target = Path(path) / "weights.pt"
        state = {k: v.detach().cpu() for k, v in self._module.state_dict().items()
                 if not k.endswith("content")}
        with atomic_path(target) as tmp:
            torch.save(state, tmp)
        written.append(target)
        return written

    def _load_extra(self, path: Path) -> None:
        self._module = self._network(int(self.n_items_), getattr(self, "content_", None))
        state = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
        missing, unexpected = self._module.load_state_dict(state, strict=False)
        if unexpected or any(not k.endswith("content") for k in missing):
            raise StageError(f"{path / 'weights.pt'}: weights do not fit the model "
                             f"(missing {missing}, unexpected {unexpected})")
        self._module.eval()


class SASRec(SequentialRecommender):
    """Self-attentive sequential recommendation (Kang & McAuley, ICDM 2018)."""

    label = "SASRec"
    arch = "sasrec"


class GRU4Rec(SequentialRecommender):
    """Session-based recommendation with a GRU (Hidasi et al., ICLR 2016), trained like
    SASRec (every position predicts the next item; `n_heads` is unused)."""

    label = "GRU4Rec"
    arch = "gru4rec"
