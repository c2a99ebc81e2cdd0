"""Collaborative models trained with BPR: BPR-MF, LightGCN, and the trainer SMORE shares.

The trainer follows MMRec (the toolbox SMORE's official code is a fork of): every epoch
walks all training interactions in a seeded random order, pairs each with one negative
drawn uniformly from the items seen in training that the user has not interacted with,
and takes Adam steps on batches of 2048. Validation Recall@20 (history = train, computed
with the current embeddings) is measured every `eval_every` epochs; the best epoch's
weights are kept and training stops after `patience` evaluations without improvement.

After `fit`, a model is its two matrices `user_vectors_` and `item_vectors_`; the score of
an item is the dot product. A user's vector at scoring time is computed from the history
`score` is given, with everything learned about items fixed (docs/evaluation.md, "Same
information for every model"): LightGCN runs its user-side propagation over the given
history (identical to training's when the history is the training row; at test the valid
items add edges), BPR-MF refits the user's vector to the history by its own per-user BPR
loss. So a user unknown to training (an anonymous history sent to the server) is scored
like any other.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from tqdm.auto import tqdm

from lvlmrec.errors import StageError
from lvlmrec.represent.base import (Recommender, TrainData, binary_csr, check_int,
                                     check_number)
from lvlmrec.represent.graph import SparseOperator, user_item_adjacency
from lvlmrec.represent.training import EarlyStopping, adam, cpu_threads, seed_everything
from lvlmrec.workdir import atomic_path

#: bytes of scores (users x items, float32) one validation block may hold
_EVAL_BYTES = 128 * 2**20


# --------------------------------------------------------------------------- losses
def bpr_loss(users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(u.p - u.n), averaged over the batch."""
    diff = (users * pos).sum(dim=1) - (users * neg).sum(dim=1)
    return -nn.functional.logsigmoid(diff).mean()


def l2_penalty(*embeddings: torch.Tensor) -> torch.Tensor:
    """Half the squared L2 norm of the batch's embeddings, per example."""
    return sum(0.5 * e.pow(2).sum() for e in embeddings) / embeddings[0].shape[0]


def propagate(adj: SparseOperator, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """LightGCN: mean of ego, A ego, A^2 ego, ... A^n_layers ego."""
    return torch.stack(graph_layers(adj, ego, n_layers), dim=0).mean(dim=0)


def graph_layers(adj: SparseOperator, ego: torch.Tensor, n_layers: int) -> list[torch.Tensor]:
    """[ego, A ego, ..., A^n_layers ego]."""
    layers = [ego]
    for _ in range(n_layers):
        ego = adj @ ego
        layers.append(ego)
    return layers


def item_side_layers(layers: list[torch.Tensor], n_users: int,
                     train: sp.spmatrix) -> np.ndarray:
    """(n_layers, n_items, d): the item rows of layers 0..n_layers-1, each scaled by the
    item's training degree^-1/2: what a user's layer l + 1 sums over (`fold_in_users`)."""
    n_items, dim = layers[0].shape[0] - n_users, layers[0].shape[1]
    out = np.zeros((len(layers) - 1, n_items, dim), dtype=np.float32)
    for depth, layer in enumerate(layers[:-1]):
        out[depth] = degree_scaled(layer[n_users:], train)
    return out


def degree_scaled(items: torch.Tensor, train: sp.spmatrix) -> np.ndarray:
    """Item rows times the item's training degree^-1/2 (0 for items never trained on)."""
    degree = np.diff(sp.csc_matrix(train).indptr).astype(np.float64)
    inv_sqrt = np.where(degree > 0, 1 / np.sqrt(np.maximum(degree, 1)), 0.0).astype(np.float32)
    return items.detach().float().cpu().numpy() * inv_sqrt[:, None]


def fold_in_users(ego: np.ndarray, history: sp.spmatrix, item_layers: np.ndarray
                  ) -> np.ndarray:
    """LightGCN's user side over the graph of the given history, the item side fixed.

    Layer 0 is the user's trained ego vector (zeros for a user unknown to training); layer
    l + 1 = sum over the history items i of layer_l(i) / sqrt(|history| deg_train(i)), the
    user's row of the normalised adjacency with the history's edges. With the training row
    as history this is exactly training's propagation; at test the valid items add edges.
    Returns the mean over layers (LightGCN's final user vector).
    """
    hist = binary_csr(history)
    total = np.array(ego, dtype=np.float32)
    for items in item_layers:
        total += user_rows(hist, items)
    return total / (len(item_layers) + 1)


def user_rows(history: sp.csr_matrix, scaled_items: np.ndarray) -> np.ndarray:
    """sum over each user's history items of `scaled_items` / sqrt(|history|): the user rows
    of the normalised adjacency times an item matrix already scaled by deg^-1/2."""
    hist = binary_csr(history)
    counts = np.diff(hist.indptr).astype(np.float32)
    inv_sqrt = np.where(counts > 0, 1 / np.sqrt(np.maximum(counts, 1)), 0.0).astype(np.float32)
    return inv_sqrt[:, None] * np.asarray(hist @ scaled_items, dtype=np.float32)


# --------------------------------------------------------------------------- trainer
class NegativeSampler:
    """One uniform negative per positive among the items seen in training, never one of
    the user's training items (resampled until clean)."""

    def __init__(self, train: sp.csr_matrix, rng: np.random.Generator, max_rounds: int = 100):
        coo = sp.coo_matrix(train)
        self.n_items = train.shape[1]
        self.keys = np.unique(coo.row.astype(np.int64) * self.n_items + coo.col)
        self.items = np.flatnonzero(np.diff(sp.csc_matrix(train).indptr) > 0)
        self.rng = rng
        self.max_rounds = max_rounds

    def _seen(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users.astype(np.int64) * self.n_items + items
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[pos] == keys

    def sample(self, users: np.ndarray) -> np.ndarray:
        neg = self.items[self.rng.integers(len(self.items), size=len(users))]
        todo = np.flatnonzero(self._seen(users, neg))
        for _ in range(self.max_rounds):  # a user who bought every item cannot be served
            if not len(todo):
                break
            neg[todo] = self.items[self.rng.integers(len(self.items), size=len(todo))]
            todo = todo[self._seen(users[todo], neg[todo])]
        return neg


@torch.no_grad()
def recall_at_k(user_vecs: torch.Tensor, item_vecs: torch.Tensor, train: sp.csr_matrix,
                valid: sp.csr_matrix, k: int = 20) -> float:
    """Mean Recall@k over users with validation items, training items masked.

    The same metric as `TrainData.valid_recall`, computed from embeddings on their device
    so that validating every epoch stays cheap at full scale.
    """
    users = np.flatnonzero(np.diff(valid.indptr) > 0)
    if not len(users):
        return 0.0
    k = min(k, item_vecs.shape[0])
    step = max(1, _EVAL_BYTES // (4 * item_vecs.shape[0]))
    total = 0.0
    for start in range(0, len(users), step):
        block = users[start:start + step]
        scores = user_vecs[torch.as_tensor(block, device=user_vecs.device)] @ item_vecs.T
        seen = train[block].tocoo()
        scores[_index(seen.row, scores), _index(seen.col, scores)] = -torch.inf
        top = torch.topk(scores, k, dim=1).indices
        target = valid[block].tocoo()
        is_target = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
        is_target[_index(target.row, scores), _index(target.col, scores)] = True
        hits = is_target.gather(1, top).sum(dim=1).double().cpu().numpy()
        total += float((hits / np.diff(valid[block].indptr)).sum())
    return total / len(users)


def _index(ids: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(ids, dtype=torch.long, device=like.device)


@dataclasses.dataclass
class TrainingResult:
    best_state: dict
    best_epoch: int
    losses: list[float]  # mean training loss per epoch
    valid: list[tuple[int, float]]  # (epoch, validation Recall@20)
    train_seconds: list[float]  # per epoch
    valid_seconds: list[float]  # per validation


class BPRModule(nn.Module):
    """What the trainer needs from a model: a batch loss and the final embeddings."""

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(users x d, items x d) final vectors, scored by dot product."""
        raise NotImplementedError


def train_bpr(module: BPRModule, data: TrainData, *, epochs: int, batch_size: int,
              learning_rate: float, lr_decay: float, patience: int, eval_every: int,
              seed: int, desc: str) -> TrainingResult:
    """Train `module` with BPR on data.train; early stopping on validation Recall@20.

    The learning rate is multiplied by lr_decay ** (epoch / 50) (MMRec's scheduler).
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size),
                        ("eval_every", eval_every), ("patience", patience)):
        check_int(name, value, 1)
    device = torch.device(data.device)
    rng = np.random.default_rng(seed)
    coo = sp.coo_matrix(data.train)
    pairs_u, pairs_i = coo.row.astype(np.int64), coo.col.astype(np.int64)
    if not len(pairs_u):
        raise StageError(f"{desc}: no training interactions to learn from")
    sampler = NegativeSampler(data.train, rng)
    optimiser = adam(module.parameters(), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda e: lr_decay ** (e / 50))
    validate = data.valid.nnz > 0
    stopper = EarlyStopping(patience=patience)
    losses: list[float] = []
    train_seconds: list[float] = []
    valid_seconds: list[float] = []
    bar = tqdm(range(epochs), desc=desc, unit="epoch", leave=False,
               disable=not data.show_progress)
    for epoch in bar:
        t0 = time.perf_counter()
        module.train()
        order = rng.permutation(len(pairs_u))
        users, pos = pairs_u[order], pairs_i[order]
        neg = sampler.sample(users)
        batches = torch.as_tensor(np.stack([users, pos, neg]), device=device)
        total = 0.0
        for start in range(0, len(users), batch_size):
            u, p, n = batches[:, start:start + batch_size]
            optimiser.zero_grad()
            loss = module.loss(u, p, n)
            if not torch.isfinite(loss):
                raise StageError(f"{desc}: training loss is {loss.item()} at epoch {epoch}, "
                                 f"batch {start // batch_size}; lower learning_rate")
            loss.backward()
            optimiser.step()
            total += loss.item() * len(u)
        scheduler.step()
        losses.append(total / len(users))
        train_seconds.append(time.perf_counter() - t0)
        last = epoch == epochs - 1
        if validate and ((epoch + 1) % eval_every == 0 or last):
            t0 = time.perf_counter()
            module.eval()
            with torch.no_grad():
                user_vecs, item_vecs = module.embeddings()
            recall = recall_at_k(user_vecs, item_vecs, data.train, data.valid)
            valid_seconds.append(time.perf_counter() - t0)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", recall20=f"{recall:.4f}")
            if stopper.step(epoch, recall, module.state_dict()):
                break
    if not validate:  # nothing to select on: keep the last epoch
        stopper.step(epochs - 1, 0.0, module.state_dict())
    return TrainingResult(best_state=stopper.best_state, best_epoch=stopper.best_epoch,
                          losses=losses, valid=stopper.history, train_seconds=train_seconds,
                          valid_seconds=valid_seconds)


# --------------------------------------------------------------------------- recommenders
class EmbeddingRecommender(Recommender):
    """A model trained by `train_bpr` and scored by user . item dot products.

    Subclasses build their `BPRModule` and keep the trainer settings as parameters:
    `learning_rate`, `lr_decay`, `batch_size`, `epochs`, `patience`, `eval_every`, `seed`,
    and `num_threads`: torch CPU threads while fitting (None: every core the process is
    granted; on a busy machine one thread can be faster for small models).
    """

    def build_module(self, data: TrainData) -> BPRModule:
        raise NotImplementedError

    def train_settings(self) -> dict:
        """The keyword arguments `fit` passes to `train_bpr`."""
        return dict(epochs=self.epochs, batch_size=self.batch_size,
                    learning_rate=self.learning_rate, lr_decay=self.lr_decay,
                    patience=self.patience, eval_every=self.eval_every, seed=self.seed,
                    desc=self.label or type(self).__name__)

    def check_params(self) -> None:
        for name, low in (("embedding_dim", 1), ("epochs", 1), ("batch_size", 1),
                          ("patience", 1), ("eval_every", 1), ("n_layers", 0),
                          ("n_ui_layers", 0), ("vision_knn_k", 1), ("text_knn_k", 1)):
            if hasattr(self, name):
                check_int(name, getattr(self, name), low)
        for name in ("knn_block_size", "num_threads"):
            if hasattr(self, name):
                check_int(name, getattr(self, name), 1, allow_none=True)
        for name, strict in (("learning_rate", True), ("lr_decay", True), ("temperature", True),
                             ("reg_weight", False), ("cl_weight", False)):
            if hasattr(self, name):
                check_number(name, getattr(self, name), 0.0, strict=strict)
        if hasattr(self, "dropout"):
            check_number("dropout", self.dropout, 0.0, 1.0)

    def fit(self, data: TrainData) -> EmbeddingRecommender:
        self.check_params()
        with cpu_threads(data.device, self.num_threads):
            return self._fit(data)

    def _fit(self, data: TrainData) -> EmbeddingRecommender:
        seed_everything(self.seed)
        module = self.build_module(data).to(torch.device(data.device))
        result = train_bpr(module, data, **self.train_settings())
        module.load_state_dict(result.best_state)
        module.eval()
        with torch.no_grad():
            user_vecs, item_vecs = module.embeddings()
        self.user_vectors_ = user_vecs.detach().float().cpu().numpy()
        self.item_vectors_ = item_vecs.detach().float().cpu().numpy()
        with torch.no_grad():
            self.keep_fold_in_state(module, data)
        self.loss_history_ = np.asarray(result.losses, dtype=np.float64)
        self.valid_history_ = np.asarray(result.valid, dtype=np.float64).reshape(-1, 2)
        self.best_epoch_ = int(result.best_epoch)
        self._weights = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        return self

    @property
    def n_items(self) -> int:
        return self.item_vectors_.shape[0]

    @property
    def n_users(self) -> int:
        return self.user_vectors_.shape[0]

    def keep_fold_in_state(self, module: BPRModule, data: TrainData) -> None:
        """Keep what `user_vectors` needs beyond the final vectors (after training)."""

    def user_vectors(self, user_ids: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """The users' vectors given their histories. Base rule: the trained vector of a
        known user, the mean of the history items' vectors for an unknown one."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        known = (user_ids >= 0) & (user_ids < self.n_users)
        users = np.zeros((len(user_ids), self.user_vectors_.shape[1]), dtype=np.float32)
        users[known] = self.user_vectors_[user_ids[known]]
        if not known.all():
            hist = sp.csr_matrix(history, dtype=np.float32)[np.flatnonzero(~known)]
            counts = np.maximum(np.diff(hist.indptr), 1).astype(np.float32)
            users[~known] = (hist @ self.item_vectors_) / counts[:, None]
        return users

    def score(self, user_ids: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        scores = self.user_vectors(user_ids, history) @ self.item_vectors_.T
        bias = getattr(self, "item_bias_", None)
        return scores if bias is None else scores + bias

    def save(self, path: str | Path) -> list[Path]:
        """Also writes the torch weights of the kept epoch to `weights.pt`."""
        written = super().save(path)
        weights = getattr(self, "_weights", None)
        if weights is not None:
            target = Path(path) / "weights.pt"
            with atomic_path(target) as tmp:
                torch.save(weights, tmp)
            written.append(target)
        return written


class _MatrixFactorisation(BPRModule):
    def __init__(self, n_users: int, n_items: int, dim: int, reg_weight: float,
                 item_bias: bool = False):
        super().__init__()
        self.user = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, dim)))
        self.item = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_items, dim)))
        self.bias = nn.Parameter(torch.zeros(n_items)) if item_bias else None
        self.reg_weight = reg_weight

    def embeddings(self):
        if self.bias is None:
            return self.user, self.item
        # a constant user coordinate times the item bias: u.v + b_i as one dot product
        ones = torch.ones(self.user.shape[0], 1, device=self.user.device)
        return torch.cat([self.user, ones], 1), torch.cat([self.item, self.bias[:, None]], 1)

    def loss(self, users, pos, neg):
        u, p, n = self.user[users], self.item[pos], self.item[neg]
        if self.bias is None:
            return bpr_loss(u, p, n) + self.reg_weight * l2_penalty(u, p, n)
        bp, bn = self.bias[pos], self.bias[neg]
        diff = (u * p).sum(1) + bp - (u * n).sum(1) - bn
        return (-nn.functional.logsigmoid(diff).mean()
                + self.reg_weight * l2_penalty(u, p, n, bp, bn))


class BPRMF(EmbeddingRecommender):
    """Matrix factorisation trained with BPR (Rendle et al., UAI 2009), optionally with an
    item bias (`item_bias`: score = u.v + b_i, the bias under the same L2 penalty).

    The default `reg_weight` is 0.1, not 1e-4: too weak for small sparse logs (on the demo
    catalog 1e-4 scored below popularity). Scoring refits a user's vector to the given
    history with the item side fixed, by `fold_in_steps` gradient steps on the user's
    expected BPR loss (`bpr_fold_in`), so test uses the valid items. Early stopping watches
    the trained user vectors (history = train).
    """

    label = "BPR-MF"
    search_space: ClassVar[dict[str, list]] = {
        "reg_weight": [1e-3, 1e-2, 3e-2, 0.1, 0.3],
        "learning_rate": [1e-3, 1e-2],
        "item_bias": [False, True],
    }

    def __init__(self, embedding_dim: int = 64, reg_weight: float = 0.1,
                 item_bias: bool = False, learning_rate: float = 1e-3, lr_decay: float = 1.0,
                 batch_size: int = 2048, epochs: int = 1000, patience: int = 20,
                 eval_every: int = 1, fold_in_steps: int = 30,
                 num_threads: int | None = None, seed: int = 0):
        self.embedding_dim = embedding_dim
        self.reg_weight = reg_weight
        self.item_bias = item_bias
        self.learning_rate = learning_rate
        self.lr_decay = lr_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.eval_every = eval_every
        self.fold_in_steps = fold_in_steps
        self.num_threads = num_threads
        self.seed = seed

    def build_module(self, data: TrainData) -> BPRModule:
        return _MatrixFactorisation(data.n_users, data.n_items, self.embedding_dim,
                                    self.reg_weight, self.item_bias)

    def keep_fold_in_state(self, module: BPRModule, data: TrainData) -> None:
        # what the fold-in reuses from training: its negatives (items seen in training) and
        # its per-user L2 weight
        self.negatives_ = np.diff(sp.csc_matrix(data.train).indptr) > 0
        self.fold_in_reg_ = float(self.reg_weight)
        if self.item_bias:  # split the bias off the augmented vectors
            self.item_bias_ = self.item_vectors_[:, -1].copy()
            self.item_vectors_ = np.ascontiguousarray(self.item_vectors_[:, :-1])
            self.user_vectors_ = np.ascontiguousarray(self.user_vectors_[:, :-1])

    def user_vectors(self, user_ids: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """Each user's vector refitted to the given history by BPR's own per-user objective,
        the item vectors (and biases) fixed: see `bpr_fold_in`."""
        if not hasattr(self, "fold_in_reg_"):  # saved before fold-in existed
            return super().user_vectors(user_ids, history)
        start = super().user_vectors(user_ids, history)
        return bpr_fold_in(start, history, self.item_vectors_, getattr(self, "item_bias_", None),
                           self.negatives_, self.fold_in_reg_, self.fold_in_steps)


#: floats of (users x history x items) pair terms one fold-in chunk may hold
_FOLD_FLOATS = 2**23


def bpr_fold_in(start: np.ndarray, history: sp.spmatrix, items: np.ndarray,
                bias: np.ndarray | None, negatives: np.ndarray, reg: float,
                steps: int) -> np.ndarray:
    """argmin_u mean_{p in history} mean_{n in negatives, not in history}
    softplus(s_n - s_p) + reg / 2 |u|^2, with s = items @ u (+ bias): the expectation of the
    BPR loss training minimised for this user, over every negative instead of samples.
    Convex in u; `steps` steps of gradient descent from `start` (the trained vector of a
    known user, the mean history item vector of an unknown one). Users are solved in chunks of
    similar history length so that a chunk's pair terms stay under `_FOLD_FLOATS`.
    """
    hist = sp.csr_matrix(history)
    lengths = np.diff(hist.indptr)
    out = np.array(start, dtype=np.float32)
    vecs = torch.from_numpy(np.ascontiguousarray(items, dtype=np.float32))
    offset = torch.from_numpy(np.zeros(len(items), np.float32) if bias is None
                              else np.asarray(bias, np.float32))
    allowed = torch.from_numpy(np.asarray(negatives, dtype=bool))
    order = np.argsort(lengths, kind="stable")
    order = order[lengths[order] > 0]  # no history: nothing to fit, keep the start
    pos = 0
    while pos < len(order):
        count = 1  # sorted by length: the chunk's last user has the longest history
        while pos + count < len(order) and \
                (count + 1) * int(lengths[order[pos + count]]) * len(items) <= _FOLD_FLOATS:
            count += 1
        chunk = order[pos:pos + count]
        out[chunk] = _fold_chunk(torch.from_numpy(out[chunk]), hist[chunk], vecs, offset,
                                 allowed, reg, steps)
        pos += count
    return out


def _fold_chunk(start: torch.Tensor, hist: sp.csr_matrix, items: torch.Tensor,
                offset: torch.Tensor, allowed: torch.Tensor, reg: float,
                steps: int) -> np.ndarray:
    n_users, n_items = hist.shape
    lengths = np.diff(hist.indptr)
    index = np.zeros((n_users, int(lengths.max())), dtype=np.int64)
    valid = np.zeros(index.shape, dtype=bool)
    for row in range(n_users):
        cols = hist.indices[hist.indptr[row]:hist.indptr[row + 1]]
        index[row, :len(cols)], valid[row, :len(cols)] = cols, True
    index_t, valid_t = torch.from_numpy(index), torch.from_numpy(valid)
    in_history = torch.zeros(n_users, n_items, dtype=torch.bool)
    in_history[torch.from_numpy(np.repeat(np.arange(n_users), lengths)),
               torch.from_numpy(hist.indices.astype(np.int64))] = True
    negative = allowed[None, :] & ~in_history
    weight = (valid_t[:, :, None] & negative[:, None, :]).float()
    weight /= (valid_t.sum(1) * negative.sum(1).clamp_min(1))[:, None, None]
    def loss_and_grad(users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        users = users.detach().requires_grad_(True)
        with torch.enable_grad():
            scores = users @ items.T + offset
            positive = torch.gather(scores, 1, index_t)
            pairs = nn.functional.softplus(scores[:, None, :] - positive[:, :, None])
            loss = (pairs * weight).sum((1, 2)) + 0.5 * reg * users.pow(2).sum(1)
            (grad,) = torch.autograd.grad(loss.sum(), users)
        return loss.detach(), grad

    # gradient descent with a step per user (grown on success, halved on failure), so a
    # user's answer never depends on who else shares the chunk; from 1 / (a bound on the
    # loss's curvature)
    step = torch.full((n_users, 1), 1.0 / float(items.pow(2).sum(1).max() + reg))
    users = start.clone()
    loss, grad = loss_and_grad(users)
    for _ in range(steps):
        trial = users - step * grad
        trial_loss, trial_grad = loss_and_grad(trial)
        better = (trial_loss <= loss)[:, None]
        users = torch.where(better, trial, users)
        loss = torch.where(better[:, 0], trial_loss, loss)
        grad = torch.where(better, trial_grad, grad)
        step = torch.where(better, step * 1.5, step * 0.5)
    return users.numpy()


class _LightGCNNet(BPRModule):
    def __init__(self, adj: torch.Tensor, n_users: int, n_items: int, dim: int,
                 n_layers: int, reg_weight: float):
        super().__init__()
        self.user = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, dim)))
        self.item = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, dim)))
        self.adj = adj  # not a buffer: it is data, rebuilt from train, not saved
        self.n_layers = n_layers
        self.reg_weight = reg_weight

    def embeddings(self):
        out = propagate(self.adj, torch.cat([self.user, self.item]), self.n_layers)
        return out[:self.user.shape[0]], out[self.user.shape[0]:]

    def loss(self, users, pos, neg):
        user_vecs, item_vecs = self.embeddings()
        u, p, n = user_vecs[users], item_vecs[pos], item_vecs[neg]
        # as in LightGCN, the penalty is on the layer-0 (free) embeddings
        reg = l2_penalty(self.user[users], self.item[pos], self.item[neg])
        return bpr_loss(u, p, n) + self.reg_weight * reg


class LightGCN(EmbeddingRecommender):
    """LightGCN (He et al., SIGIR 2020): ID embeddings smoothed over the normalised
    user-item graph, the final vector the mean over layers 0..n_layers."""

    label = "LightGCN"
    search_space: ClassVar[dict[str, list]] = {
        "reg_weight": [1e-4, 1e-3, 1e-2, 0.1],
        "learning_rate": [1e-3, 1e-2],
        "n_layers": [1, 2, 3],
    }

    def __init__(self, embedding_dim: int = 64, n_layers: int = 3, reg_weight: float = 1e-4,
                 learning_rate: float = 1e-3, lr_decay: float = 1.0, batch_size: int = 2048,
                 epochs: int = 1000, patience: int = 20, eval_every: int = 1,
                 num_threads: int | None = None, seed: int = 0):
        self.embedding_dim = embedding_dim
        self.n_layers = n_layers
        self.reg_weight = reg_weight
        self.learning_rate = learning_rate
        self.lr_decay = lr_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.eval_every = eval_every
        self.num_threads = num_threads
        self.seed = seed

    def build_module(self, data: TrainData) -> BPRModule:
        adj = SparseOperator(user_item_adjacency(data.train), data.device)
        return _LightGCNNet(adj, data.n_users, data.n_items, self.embedding_dim,
                            self.n_layers, self.reg_weight)

    def keep_fold_in_state(self, module: BPRModule, data: TrainData) -> None:
        keep_graph_fold_in_state(self, module.user, module.item, module.adj, self.n_layers,
                                 data.train)

    def user_vectors(self, user_ids: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        if not hasattr(self, "item_layers_"):  # saved before fold-in existed
            return super().user_vectors(user_ids, history)
        return fold_in_users(self.user_ego(user_ids), history, self.item_layers_)

    def user_ego(self, user_ids: np.ndarray) -> np.ndarray:
        """The trained layer-0 vectors of known users, zeros for unknown ones."""
        return ego_rows(self.user_ego_, user_ids)


def ego_rows(ego: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
    user_ids = np.asarray(user_ids, dtype=np.int64)
    known = (user_ids >= 0) & (user_ids < ego.shape[0])
    out = np.zeros((len(user_ids), ego.shape[1]), dtype=np.float32)
    out[known] = ego[user_ids[known]]
    return out


def keep_graph_fold_in_state(model: Recommender, user: torch.Tensor, item: torch.Tensor,
                             adj: SparseOperator, n_layers: int, train: sp.spmatrix) -> None:
    """Store the trained user ego vectors (`user_ego_`) and the degree-scaled item side of
    layers 0..n_layers-1 (`item_layers_`) that `fold_in_users` needs."""
    layers = graph_layers(adj, torch.cat([user, item]), n_layers)
    model.user_ego_ = user.detach().float().cpu().numpy()
    model.item_layers_ = item_side_layers(layers, user.shape[0], train)
