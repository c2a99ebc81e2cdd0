"""Sparse graphs for the graph models: the user-item graph and item-item kNN graphs.

Every graph is built and kept sparse. The item-item kNN graph in particular is built in
blocks of rows (block x all items similarities, top-k per row, keep only those), so
memory grows with items x k, never items x items: the official SMORE code builds the dense
N x N similarity (about 6 GB at 38k items in float32) before keeping the top-k.

Normalisation follows MMRec, which SMORE's code reuses: D^-1/2 A D^-1/2 with D the row
sums of A. For the user-item graph A is symmetric; a kNN graph is directed (each item
keeps its own k neighbours) and is normalised with its out-degrees, as in the reference.
Either way the normalised matrix Â satisfies Â sqrt(d) = sqrt(d) (tests check it).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

#: bytes of similarity scores one kNN block may hold (block rows x all items, float32)
_BLOCK_BYTES = 128 * 2**20


def sym_normalise(adj: sp.spmatrix) -> sp.csr_matrix:
    """D^-1/2 A D^-1/2 with D = row sums; rows whose sum is not positive get no weight.

    The reference would produce NaN for such rows (an item with all-zero features, or a
    user or item without any training interaction); here they are simply isolated.
    """
    adj = sp.csr_matrix(adj, dtype=np.float32)
    deg = np.asarray(adj.sum(axis=1), dtype=np.float64).ravel()
    inv_sqrt = np.zeros_like(deg)
    positive = deg > 0
    inv_sqrt[positive] = deg[positive] ** -0.5
    out = adj.copy()
    rows = np.repeat(np.arange(adj.shape[0]), np.diff(adj.indptr))
    out.data = (adj.data * inv_sqrt[rows] * inv_sqrt[adj.indices]).astype(np.float32)
    return out


def user_item_adjacency(train: sp.spmatrix) -> sp.csr_matrix:
    """The normalised (users + items) square graph of LightGCN: [[0, R], [R^T, 0]]."""
    r = sp.csr_matrix(train, dtype=np.float32)
    r.data[:] = 1.0
    adj = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    return sym_normalise(adj)


def knn_graph(
    features: np.ndarray,
    k: int,
    block_size: int | None = None,
    device: str = "cpu",
    show_progress: bool = False,
) -> sp.csr_matrix:
    """Top-k cosine-similarity graph of the rows of `features`, normalised, as CSR.

    Row i keeps its k most similar rows, itself included (its similarity is 1), with the
    cosine as weight, as the reference's `torch.topk` over the full similarity does.
    Zero rows are similar to nothing (cosine 0). Blocks of `block_size` rows are scored
    against all rows at once; the default keeps a block's scores under 128 MiB.
    """
    n = features.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"knn k must be between 1 and the number of items ({n}); got {k}")
    if block_size is None:
        block_size = max(1, min(n, _BLOCK_BYTES // (4 * n)))
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32, device=device)
    x = torch.nn.functional.normalize(x, dim=1)
    values = np.empty((n, k), dtype=np.float32)
    indices = np.empty((n, k), dtype=np.int64)
    starts = range(0, n, block_size)
    for start in tqdm(starts, desc=f"kNN graph (k={k})", unit="block", leave=False,
                      disable=not show_progress):
        sims = x[start:start + block_size] @ x.T
        top = torch.topk(sims, k, dim=1)
        values[start:start + block_size] = top.values.cpu().numpy()
        indices[start:start + block_size] = top.indices.cpu().numpy()
        del sims, top
    # explicit entries, even zero ones, so every row holds exactly k edges
    adj = sp.csr_matrix((values.ravel(), indices.ravel(), np.arange(0, n * k + 1, k)),
                        shape=(n, n))
    adj.sort_indices()
    return sym_normalise(adj)


def max_union(a: sp.spmatrix, b: sp.spmatrix) -> sp.csr_matrix:
    """Union of two graphs' edges; an edge in both keeps the larger weight.

    An edge in only one graph keeps its weight even when negative (the reference fills
    the missing side with -inf before the elementwise max).
    """
    if a.shape != b.shape:
        raise ValueError(f"cannot fuse graphs of shapes {a.shape} and {b.shape}")
    a, b = sp.coo_matrix(a), sp.coo_matrix(b)
    rows = np.concatenate([a.row, b.row]).astype(np.int64)
    cols = np.concatenate([a.col, b.col]).astype(np.int64)
    vals = np.concatenate([a.data, b.data]).astype(np.float32)
    key = rows * a.shape[1] + cols
    order = np.lexsort((-vals, key))  # per edge, the largest weight first
    key, vals = key[order], vals[order]
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    key, vals = key[first], vals[first]
    out = sp.csr_matrix((vals, (key // a.shape[1], key % a.shape[1])), shape=a.shape)
    out.sort_indices()
    return out


class SparseOperator:
    """A fixed sparse matrix A for `A @ dense` inside autograd: CSR, with A^T kept in CSR.

    torch's COO `sparse.mm` re-sorts A's transpose in every backward pass and runs one
    thread on CPU; here both directions are CSR products (MKL on CPU, cuSPARSE on CUDA),
    so a SMORE training step at the study's scale spends a small fraction of the time in
    its graphs (docs/benchmarks.md, "CPU speed"). Products equal scipy's within float
    rounding (tests/test_graph.py).
    """

    def __init__(self, matrix: sp.spmatrix, device: str | torch.device = "cpu"):
        csr = sp.csr_matrix(matrix, dtype=np.float32)
        self.shape = csr.shape
        self.matrix = _torch_csr(csr, device)
        self.transposed = _torch_csr(csr.T.tocsr(), device)

    def __matmul__(self, dense: torch.Tensor) -> torch.Tensor:
        return _SparseMatmul.apply(dense, self)


class _SparseMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dense: torch.Tensor, op: SparseOperator) -> torch.Tensor:
        ctx.op = op
        return torch.sparse.mm(op.matrix, dense)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return torch.sparse.mm(ctx.op.transposed, grad.contiguous()), None


def _torch_csr(csr: sp.csr_matrix, device: str | torch.device) -> torch.Tensor:
    csr.sort_indices()  # scipy's CSR, sorted, meets torch's invariants: no check needed
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(csr.indptr.astype(np.int64)),
            torch.from_numpy(csr.indices.astype(np.int64)),
            torch.from_numpy(csr.data.astype(np.float32)), csr.shape, device=device,
            check_invariants=False)

