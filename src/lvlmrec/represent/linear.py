"""The strong simple baselines: EASE and iALS.

Both are closed-form or alternating least-squares models that, tuned, match or beat most
neural recommenders on the usual benchmarks (Steck, WWW 2019; Rendle et al., RecSys 2022),
so a comparison without them flatters whatever it compares.

Both score from the history they are given, never from a vector stored per training user:
EASE's score is history @ B, and iALS solves each user's factors from the given history
with the item factors fixed (the least-squares user step of ALS, `implicit`'s
`recalculate_user`). So at test time (history = train + valid) they use the valid items
like every other model (docs/evaluation.md, "Same information for every model").
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from lvlmrec.errors import ConfigError
from lvlmrec.represent.base import Recommender, TrainData, binary_csr
from lvlmrec.represent.training import torch_threads

#: floats of per-interaction outer products (nnz x d x d) accumulated at once
_OUTER_FLOATS = 2**24


class EASE(Recommender):
    """Embarrassingly shallow autoencoder (Steck, WWW 2019), closed form.

    B = argmin ||X - X B||^2 + l2 ||B||^2 subject to diag(B) = 0, which is
    B = I - P / diag(P) with P = (X^T X + l2 I)^-1. A user's scores are history @ B. The
    items x items matrix is dense: about 4 n_items^2 bytes (16 MB at 2,000 items, 5.9 GB
    at 38,000), so EASE suits catalogs up to some tens of thousands of items.
    """

    label = "EASE"
    search_space: ClassVar[dict[str, list]] = {"l2": [10.0, 50.0, 100.0, 250.0, 500.0,
                                                     1000.0, 2500.0]}

    def __init__(self, l2: float = 250.0):
        self.l2 = l2

    def fit(self, data: TrainData) -> EASE:
        if not self.l2 > 0:
            raise ConfigError(f"ease: l2 must be positive, not {self.l2}")
        x = binary_csr(data.train)
        dtype = np.float64 if x.shape[1] <= 20_000 else np.float32
        gram = (x.T @ x).toarray().astype(dtype)
        gram[np.diag_indices_from(gram)] += self.l2
        p = np.linalg.inv(gram)
        b = p / -np.diag(p)[None, :]
        b[np.diag_indices_from(b)] = 0.0
        self.weights_ = b.astype(np.float32)
        return self

    @property
    def n_items(self) -> int:
        return self.weights_.shape[0]

    def score(self, user_ids: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        return np.asarray(binary_csr(history) @ self.weights_, dtype=np.float32)


class IALS(Recommender):
    """Implicit-feedback ALS (Hu, Koren & Volinsky, ICDM 2008) as revisited by Rendle et
    al. (RecSys 2022).

    Loss over users u and items i, with y_ui = w_u . h_i:
      sum over observed (y_ui - 1)^2 + unobserved_weight * sum over all (u, i) of y_ui^2
      + regularization * (sum_u (|I_u| + a0 |I|)^nu |w_u|^2 + sum_i (|U_i| + a0 |U|)^nu |h_i|^2)
    with a0 = unobserved_weight and nu = reg_exponent (Rendle et al.'s frequency-scaled
    regularisation; nu = 0 is the plain L2 of Hu et al.). Hu et al.'s confidence 1 + alpha
    on observed pairs is the same model with unobserved_weight = 1 / (1 + alpha).
    Factors start N(0, init_std / sqrt(factors)) from `seed`; each of `iterations` solves
    every user, then every item, exactly (`solver: exact`, batched Cholesky) or by
    `cg_steps` warm-started conjugate-gradient steps (`solver: cg`, no d x d system per row:
    for large `factors`). Scoring solves the users' factors from the given history with
    the item factors fixed (always exactly), so no user vector is stored.
    """

    label = "iALS"
    search_space: ClassVar[dict[str, list]] = {
        "factors": [64, 128],
        "regularization": [1e-3, 3e-3, 1e-2, 3e-2],
        "unobserved_weight": [0.03, 0.1, 0.3, 1.0],
    }

    def __init__(self, factors: int = 64, regularization: float = 1e-2,
                 unobserved_weight: float = 0.1, reg_exponent: float = 1.0,
                 iterations: int = 16, init_std: float = 0.1, solver: str = "cg",
                 cg_steps: int = 3, num_threads: int | None = None, seed: int = 0):
        self.factors = factors
        self.regularization = regularization
        self.unobserved_weight = unobserved_weight
        self.reg_exponent = reg_exponent
        self.iterations = iterations
        self.init_std = init_std
        self.solver = solver
        self.cg_steps = cg_steps
        self.num_threads = num_threads
        self.seed = seed

    def _check(self) -> None:
        if self.solver not in ("exact", "cg"):
            raise ConfigError(f"ials: solver must be 'exact' or 'cg', not {self.solver!r}")
        if self.factors < 1 or self.iterations < 1 or self.cg_steps < 1:
            raise ConfigError("ials: factors, iterations and cg_steps must be at least 1")
        if self.regularization < 0 or self.unobserved_weight < 0:
            raise ConfigError("ials: regularization and unobserved_weight must be non-negative")

    def fit(self, data: TrainData) -> IALS:
        self._check()
        with torch_threads(self.num_threads):
            x = binary_csr(data.train)
            xt = x.T.tocsr()
            gen = torch.Generator().manual_seed(self.seed)
            scale = self.init_std / np.sqrt(self.factors)
            users = torch.randn(x.shape[0], self.factors, generator=gen, dtype=torch.float32)
            items = torch.randn(x.shape[1], self.factors, generator=gen, dtype=torch.float32)
            users, items = users * scale, items * scale
            for _ in tqdm(range(self.iterations), desc="iALS", unit="iteration", leave=False,
                          disable=not data.show_progress):
                users = self._solve(x, items, users)
                items = self._solve(xt, users, items)
            self.item_factors_ = items.float().numpy()
            self.train_loss_ = float(self._loss(x, users, items))
        return self

    def _row_reg(self, rows: sp.csr_matrix, n_other: int) -> torch.Tensor:
        counts = np.diff(rows.indptr).astype(np.float32)
        return torch.from_numpy((self.regularization * (counts + self.unobserved_weight
                                                         * n_other) ** self.reg_exponent)
                                .astype(np.float32))

    def _solve(self, rows: sp.csr_matrix, other: torch.Tensor, start: torch.Tensor,
               solver: str | None = None) -> torch.Tensor:
        """Each row's factors given the other side's (the ALS half-step)."""
        reg = self._row_reg(rows, other.shape[0])
        gram = self.unobserved_weight * (other.T @ other)
        rhs = torch.from_numpy(np.asarray(sp.csr_matrix(rows, dtype=np.float32) @ other.numpy()))
        if (solver or self.solver) == "exact":
            return solve_exact(rows, other, gram, reg, rhs)
        return solve_cg(rows, other, gram, reg, rhs, start, self.cg_steps)

    def _loss(self, x: sp.csr_matrix, users: torch.Tensor, items: torch.Tensor) -> float:
        coo = x.tocoo()
        observed = (users[coo.row] * items[coo.col]).sum(1)
        all_pairs = torch.sum((users.T @ users) * (items.T @ items))
        reg = (self._row_reg(x, x.shape[1]) @ users.pow(2).sum(1)
               + self._row_reg(x.T.tocsr(), x.shape[0]) @ items.pow(2).sum(1))
        loss = (observed - 1).pow(2).sum() + self.unobserved_weight * all_pairs + reg
        return float(loss) / max(x.nnz, 1)

    @property
    def n_items(self) -> int:
        return self.item_factors_.shape[0]

    def item_vectors(self) -> np.ndarray:
        return self.item_factors_

    def user_factors(self, history: sp.csr_matrix) -> np.ndarray:
        """Factors of users with the given histories, item factors fixed (exact solve)."""
        items = torch.from_numpy(self.item_factors_.astype(np.float32))
        hist = binary_csr(history)
        start = torch.zeros(hist.shape[0], items.shape[1], dtype=torch.float32)
        return self._solve(hist, items, start, solver="exact").float().numpy()

    def score(self, user_ids: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        return self.user_factors(history) @ self.item_factors_.T


def solve_exact(rows: sp.csr_matrix, other: torch.Tensor, gram: torch.Tensor,
                reg: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve (sum_{j in row} o_j o_j^T + gram + reg_r I) x_r = rhs_r for every row r.

    Rows are taken in order of length, a chunk's item vectors gathered into a zero-padded
    (rows, longest, d) block, so each row's Gram matrix is one batched matrix product.
    """
    n, d = rhs.shape
    out = torch.empty_like(rhs)
    lengths = np.diff(rows.indptr)
    order = np.argsort(lengths, kind="stable")
    padded_other = torch.cat([other, torch.zeros(1, d, dtype=other.dtype)])  # row -1: zeros
    eye = torch.eye(d, dtype=other.dtype)
    pos = 0
    while pos < n:
        longest = max(int(lengths[order[min(pos + 1, n) - 1]]), 1)
        # rows sorted by length: grow the chunk while (rows x longest x d) stays under the cap
        count = 1
        while pos + count < n and (count + 1) * max(int(lengths[order[pos + count]]), 1) * d \
                <= _OUTER_FLOATS:
            count += 1
        chunk = order[pos:pos + count]
        longest = max(int(lengths[chunk[-1]]), 1)
        index = np.full((count, longest), -1, dtype=np.int64)
        for slot, r in enumerate(chunk):  # cheap next to the solves: one slice per row
            cols = rows.indices[rows.indptr[r]:rows.indptr[r + 1]]
            index[slot, :len(cols)] = cols
        vecs = padded_other[torch.from_numpy(index)]
        a = vecs.transpose(1, 2) @ vecs + gram
        a += torch.from_numpy(np.ascontiguousarray(reg.numpy()[chunk]))[:, None, None] * eye
        b = rhs[torch.from_numpy(chunk)][:, :, None]
        chol, info = torch.linalg.cholesky_ex(a)
        if bool((info > 0).any()):  # a row with no regularisation and too few items
            out[torch.from_numpy(chunk)] = torch.linalg.lstsq(a, b).solution[..., 0]
        else:
            out[torch.from_numpy(chunk)] = torch.cholesky_solve(b, chol)[..., 0]
        pos += count
    return out


def solve_cg(rows: sp.csr_matrix, other: torch.Tensor, gram: torch.Tensor, reg: torch.Tensor,
             rhs: torch.Tensor, x: torch.Tensor, steps: int) -> torch.Tensor:
    """A few conjugate-gradient steps on every row's system at once, from `x`."""
    coo = rows.tocoo()
    row_ids = torch.from_numpy(coo.row.astype(np.int64))
    vecs = other[torch.from_numpy(coo.col.astype(np.int64))]

    def matvec(v: torch.Tensor) -> torch.Tensor:
        out = v @ gram + reg[:, None] * v
        return out.index_add_(0, row_ids, (vecs * v[row_ids]).sum(1, keepdim=True) * vecs)

    x = x.clone()
    r = rhs - matvec(x)
    p = r.clone()
    rs = (r * r).sum(1)
    for _ in range(steps):
        ap = matvec(p)
        alpha = rs / (p * ap).sum(1).clamp_min(1e-30)
        x += alpha[:, None] * p
        r -= alpha[:, None] * ap
        rs_new = (r * r).sum(1)
        p = r + (rs_new / rs.clamp_min(1e-30))[:, None] * p
        rs = rs_new
    return x
