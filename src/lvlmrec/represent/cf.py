"""Collaborative models trained with BPR: BPR-MF, LightGCN, and the trainer SMORE shares.

The trainer follows MMRec (the toolbox SMORE's official code is a fork of): every epoch
walks all training interactions in a seeded random order, pairs each with one negative
drawn uniformly from the items seen in training that the user has not interacted with,
and takes Adam steps on batches of 2048. Validation Recall@20 (history = train, computed
with the current embeddings) is measured every `eval_every` epochs; the best epoch's
weights are kept and training stops after `patience` evaluations without improvement.

After `fit`, a model is its two matrices `user_vectors_` and `item_vectors_`; the score of
an item is the dot product. A user unknown to training (id < 0 or >= n_users, for example
an anonymous history sent to the server) is folded in as the mean of their history items'
vectors: an approximation of what training would give them, at no retraining cost.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from tqdm.auto import tqdm

from lvlmrec.errors import StageError
from lvlmrec.represent.base import Recommender, TrainData
from lvlmrec.represent.graph import to_torch_sparse, user_item_adjacency
from lvlmrec.represent.training import EarlyStopping, cpu_threads, seed_everything
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


def propagate(adj: torch.Tensor, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """LightGCN: mean of ego, A ego, A^2 ego, ... A^n_layers ego."""
    layers = [ego]
    for _ in range(n_layers):
        ego = torch.sparse.mm(adj, ego)
        layers.append(ego)
    return torch.stack(layers, dim=0).mean(dim=0)


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
    if epochs < 1 or batch_size < 1 or eval_every < 1 or patience < 1:
        raise ValueError(f"{desc}: epochs, batch_size, eval_every and patience must be >= 1")
    device = torch.device(data.device)
    rng = np.random.default_rng(seed)
    coo = sp.coo_matrix(data.train)
    pairs_u, pairs_i = coo.row.astype(np.int64), coo.col.astype(np.int64)
    if not len(pairs_u):
        raise StageError(f"{desc}: no training interactions to learn from")
    sampler = NegativeSampler(data.train, rng)
    optimiser = torch.optim.Adam(module.parameters(), lr=learning_rate)
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

    def fit(self, data: TrainData) -> EmbeddingRecommender:
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

    def score(self, user_ids: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        user_ids = np.asarray(user_ids, dtype=np.int64)
        known = (user_ids >= 0) & (user_ids < self.n_users)
        users = np.zeros((len(user_ids), self.user_vectors_.shape[1]), dtype=np.float32)
        users[known] = self.user_vectors_[user_ids[known]]
        if not known.all():  # fold in: the mean of the history items' vectors
            hist = sp.csr_matrix(history, dtype=np.float32)[np.flatnonzero(~known)]
            counts = np.maximum(np.diff(hist.indptr), 1).astype(np.float32)
            users[~known] = (hist @ self.item_vectors_) / counts[:, None]
        return users @ self.item_vectors_.T

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
    def __init__(self, n_users: int, n_items: int, dim: int, reg_weight: float):
        super().__init__()
        self.user = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, dim)))
        self.item = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_items, dim)))
        self.reg_weight = reg_weight

    def embeddings(self):
        return self.user, self.item

    def loss(self, users, pos, neg):
        u, p, n = self.user[users], self.item[pos], self.item[neg]
        return bpr_loss(u, p, n) + self.reg_weight * l2_penalty(u, p, n)


class BPRMF(EmbeddingRecommender):
    """Matrix factorisation trained with BPR (Rendle et al., UAI 2009)."""

    label = "BPR-MF"

    def __init__(self, embedding_dim: int = 64, reg_weight: float = 1e-4,
                 learning_rate: float = 1e-3, lr_decay: float = 1.0, batch_size: int = 2048,
                 epochs: int = 1000, patience: int = 20, eval_every: int = 1,
                 num_threads: int | None = None, seed: int = 0):
        self.embedding_dim = embedding_dim
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
        return _MatrixFactorisation(data.n_users, data.n_items, self.embedding_dim,
                                    self.reg_weight)


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
        adj = to_torch_sparse(user_item_adjacency(data.train), data.device)
        return _LightGCNNet(adj, data.n_users, data.n_items, self.embedding_dim,
                            self.n_layers, self.reg_weight)
