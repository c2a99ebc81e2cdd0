"""SMORE: spectrum-based modality representation fusion GCN (Ong & Khong, WSDM 2025).

A collaborative model whose item ID embeddings are gated by spectrally fused modalities,
following the official implementation (a fork of MMRec, `src/models/smore.py`):

1. Raw text and vision features (trainable, initialised from the given embeddings) are
   projected to d by one linear layer each.
2. Spectrum fusion: F = rfft(x, norm="ortho") along the feature dim; learned complex
   filters W_v, W_t, W_f of shape (1, d/2+1), initialised N(0, 1) for real and imaginary
   parts. Denoised v = irfft(F_v W_v), t = irfft(F_t W_t); fused = irfft(F_v F_t W_f): a
   product of spectra, that is a circular convolution of the two modalities
   (with W_f = 1, fused = (v (*) t) / sqrt(d) under the orthonormal scaling).
3. Each view m in {v, t, fused}: item ID embedding * sigmoid(Linear(view_m)).
4. Behaviour view: LightGCN over the normalised user-item graph (mean of layers 0..n_ui).
5. Item-item graphs: top-k cosine kNN of the raw features, D^-1/2 A D^-1/2; the fusion
   graph is their union with the elementwise max weight. Each view is propagated
   n_layers on its graph (the fused view on the fusion graph); a user's view vector is
   the normalised user-item block R @ item view.
6. Modality-aware preference: softmax over the feature dim of query_m(fused view)
   (Linear-Tanh-Linear) weights the vision and text views; gates sigmoid(Linear(
   behaviour)) (with dropout) scale vision, text and fused; side = mean of the three;
   final = behaviour + side. Scores are dot products of final vectors.
7. Loss: BPR with one negative + reg_weight * (half squared L2 of the batch's final
   vectors) / batch + cl_weight * (InfoNCE(side, behaviour) over the batch's positive
   items + over its users), temperature 0.2.

Differences from the official code, all for scale or robustness, none in the model:
the kNN graphs are built blockwise with top-k (`graph.knn_graph`) instead of from a
dense N x N similarity; items whose features are all zero are isolated instead of
producing NaN; everything runs on CPU or GPU (the reference calls `.cuda()`); the best
validation epoch's weights are kept (MMRec reports the best epoch's test score instead);
the L2 term divides by the actual batch size (MMRec: by the configured 2048).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from lvlmrec.errors import DataError
from lvlmrec.represent.base import TrainData
from lvlmrec.represent.cf import (BPRModule, EmbeddingRecommender, bpr_loss, degree_scaled,
                                  ego_rows, fold_in_users, keep_graph_fold_in_state, l2_penalty,
                                  propagate, user_rows)
from lvlmrec.represent.graph import SparseOperator, knn_graph, max_union, user_item_adjacency


def spectrum_fusion(vision: torch.Tensor, text: torch.Tensor, w_vision: torch.Tensor,
                    w_text: torch.Tensor, w_fusion: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Denoised vision, denoised text and fused rows; the filters are complex (1, d/2+1)."""
    d = vision.shape[1]
    f_vision = torch.fft.rfft(vision, dim=1, norm="ortho")
    f_text = torch.fft.rfft(text, dim=1, norm="ortho")
    return (torch.fft.irfft(f_vision * w_vision, n=d, dim=1, norm="ortho"),
            torch.fft.irfft(f_text * w_text, n=d, dim=1, norm="ortho"),
            torch.fft.irfft(f_vision * f_text * w_fusion, n=d, dim=1, norm="ortho"))


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Row i of a should match row i of b among all rows of b (cosine / temperature)."""
    a = nn.functional.normalize(a, dim=1) / temperature  # scale rows, not the n x n logits
    b = nn.functional.normalize(b, dim=1)
    logits = a @ b.T
    return (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()


def _gate(dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, dim), nn.Sigmoid())


def _query(dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, dim, bias=False))


class SMORENet(BPRModule):
    """The SMORE network over fixed graphs (see the module docstring for the steps)."""

    def __init__(self, n_users: int, text: torch.Tensor, vision: torch.Tensor,
                 ui_adj: SparseOperator, ui_block: SparseOperator, text_adj: SparseOperator,
                 vision_adj: SparseOperator, fusion_adj: SparseOperator, dim: int = 64,
                 n_ui_layers: int = 3, n_layers: int = 1, dropout: float = 0.0,
                 reg_weight: float = 1e-5, cl_weight: float = 0.01, temperature: float = 0.2,
                 train_features: bool = True):
        super().__init__()
        n_items = text.shape[0]
        self.n_users = n_users
        self.user = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, dim)))
        self.item = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, dim)))
        if train_features:  # as in the reference (nn.Embedding.from_pretrained(freeze=False))
            self.text_features = nn.Parameter(text.clone())
            self.vision_features = nn.Parameter(vision.clone())
        else:  # inputs, not weights: kept out of the saved state
            self.register_buffer("text_features", text, persistent=False)
            self.register_buffer("vision_features", vision, persistent=False)
        self.text_proj = nn.Linear(text.shape[1], dim)
        self.vision_proj = nn.Linear(vision.shape[1], dim)
        n_freq = dim // 2 + 1
        self.text_filter = nn.Parameter(torch.randn(1, n_freq, 2))
        self.vision_filter = nn.Parameter(torch.randn(1, n_freq, 2))
        self.fusion_filter = nn.Parameter(torch.randn(1, n_freq, 2))
        self.text_gate, self.vision_gate, self.fusion_gate = _gate(dim), _gate(dim), _gate(dim)
        self.text_query, self.vision_query = _query(dim), _query(dim)
        self.text_prefer, self.vision_prefer, self.fusion_prefer = (_gate(dim), _gate(dim),
                                                                    _gate(dim))
        self.dropout = nn.Dropout(dropout)
        # graphs are data rebuilt from the inputs, not saved weights
        self.ui_adj, self.ui_block = ui_adj, ui_block
        self.text_adj, self.vision_adj, self.fusion_adj = text_adj, vision_adj, fusion_adj
        self.n_ui_layers, self.n_layers = n_ui_layers, n_layers
        self.reg_weight, self.cl_weight, self.temperature = reg_weight, cl_weight, temperature

    def item_views(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The gated vision, text and fused item views after the item-item layers."""
        vision, text, fused = spectrum_fusion(
            self.vision_proj(self.vision_features), self.text_proj(self.text_features),
            torch.view_as_complex(self.vision_filter), torch.view_as_complex(self.text_filter),
            torch.view_as_complex(self.fusion_filter))
        views = []
        for feature, gate, adj in ((vision, self.vision_gate, self.vision_adj),
                                   (text, self.text_gate, self.text_adj),
                                   (fused, self.fusion_gate, self.fusion_adj)):
            items = self.item * gate(feature)
            for _ in range(self.n_layers):
                items = adj @ items
            views.append(items)
        return views[0], views[1], views[2]

    def forward(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(final, side, behaviour) vectors of users then items."""
        behaviour = propagate(self.ui_adj, torch.cat([self.user, self.item]), self.n_ui_layers)
        vision_view, text_view, fused_view = (
            torch.cat([self.ui_block @ items, items])
            for items in self.item_views())
        vision_view = torch.softmax(self.vision_query(fused_view), dim=-1) * vision_view
        text_view = torch.softmax(self.text_query(fused_view), dim=-1) * text_view
        side = (self.dropout(self.vision_prefer(behaviour)) * vision_view
                + self.dropout(self.text_prefer(behaviour)) * text_view
                + self.dropout(self.fusion_prefer(behaviour)) * fused_view) / 3
        return behaviour + side, side, behaviour

    def embeddings(self):
        final, _, _ = self.forward()
        return final[:self.n_users], final[self.n_users:]

    def loss(self, users, pos, neg):
        final, side, behaviour = self.forward()
        n = self.n_users
        u, p, q = final[users], final[n + pos], final[n + neg]
        contrast = (info_nce(side[n + pos], behaviour[n + pos], self.temperature)
                    + info_nce(side[users], behaviour[users], self.temperature))
        return (bpr_loss(u, p, q) + self.reg_weight * l2_penalty(u, p, q)
                + self.cl_weight * contrast)


class SMORE(EmbeddingRecommender):
    """SMORE over any text and vision embeddings from the registry.

    Defaults are the paper's Clothing settings (d 64, 3 user-item layers, 1 item-item
    layer, vision k 40, text k 10, dropout 0, reg 1e-5, contrastive weight 0.01,
    temperature 0.2, Adam 1e-3 decayed 0.96 every 50 epochs, batch 2048) and MMRec's
    1000-epoch cap with early stopping after 20 validations without improvement.
    """

    label = "SMORE"
    search_space: ClassVar[dict[str, list]] = {
        "reg_weight": [1e-5, 1e-4, 1e-3],
        "cl_weight": [0.01, 0.05, 0.1],
        "learning_rate": [1e-3, 1e-2],
    }
    # Only through its content paths: an item without training interactions has no edge
    # in the user-item graph and an ID embedding trained only as a neighbour of others, but
    # its modality views propagate over the content kNN graphs, so it is scored from the
    # gated ID vectors of the items its text and image resemble (docs/evaluation.md).
    scores_unseen_items = True

    def __init__(self, text: str = "title", vision: str = "efficientnet",
                 embedding_dim: int = 64, n_ui_layers: int = 3, n_layers: int = 1,
                 vision_knn_k: int = 40, text_knn_k: int = 10, dropout: float = 0.0,
                 reg_weight: float = 1e-5, cl_weight: float = 0.01, temperature: float = 0.2,
                 train_features: bool = True, learning_rate: float = 1e-3,
                 lr_decay: float = 0.96, batch_size: int = 2048, epochs: int = 1000,
                 patience: int = 20, eval_every: int = 1, knn_block_size: int | None = None,
                 num_threads: int | None = None, seed: int = 0):
        self.text = text
        self.vision = vision
        self.embedding_dim = embedding_dim
        self.n_ui_layers = n_ui_layers
        self.n_layers = n_layers
        self.vision_knn_k = vision_knn_k
        self.text_knn_k = text_knn_k
        self.dropout = dropout
        self.reg_weight = reg_weight
        self.cl_weight = cl_weight
        self.temperature = temperature
        self.train_features = train_features
        self.learning_rate = learning_rate
        self.lr_decay = lr_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.eval_every = eval_every
        self.knn_block_size = knn_block_size
        self.num_threads = num_threads
        self.seed = seed

    def _features(self, data: TrainData, source: str) -> np.ndarray:
        x = np.asarray(data.embedding(source), dtype=np.float32)
        if x.ndim != 2 or x.shape[0] != data.n_items:
            raise DataError(f"SMORE: embedding source {source!r} has shape {x.shape}; "
                            f"expected ({data.n_items}, dim), one row per item")
        if not np.isfinite(x).all():
            bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
            raise DataError(f"SMORE: embedding source {source!r} has non-finite values "
                            f"in {len(bad)} rows (first item ids: {bad[:5].tolist()})")
        return x

    def build_module(self, data: TrainData) -> SMORENet:
        device = data.device
        text = self._features(data, self.text)
        vision = self._features(data, self.vision)
        knn = dict(block_size=self.knn_block_size, device=device,
                   show_progress=data.show_progress)
        text_adj = knn_graph(text, min(self.text_knn_k, data.n_items), **knn)
        vision_adj = knn_graph(vision, min(self.vision_knn_k, data.n_items), **knn)
        ui_adj = user_item_adjacency(data.train)
        return SMORENet(
            data.n_users,
            torch.from_numpy(text).to(device), torch.from_numpy(vision).to(device),
            ui_adj=SparseOperator(ui_adj, device),
            ui_block=SparseOperator(ui_adj[:data.n_users, data.n_users:], device),
            text_adj=SparseOperator(text_adj, device),
            vision_adj=SparseOperator(vision_adj, device),
            fusion_adj=SparseOperator(max_union(text_adj, vision_adj), device),
            dim=self.embedding_dim, n_ui_layers=self.n_ui_layers, n_layers=self.n_layers,
            dropout=self.dropout, reg_weight=self.reg_weight, cl_weight=self.cl_weight,
            temperature=self.temperature, train_features=self.train_features,
        )

    def keep_fold_in_state(self, module: SMORENet, data: TrainData) -> None:
        """The item side of every user-side computation, for `user_vectors`: LightGCN's
        item layers, the three item views scaled for the user-item block, and the small
        query and preference layers (as (d, d + 1) arrays: weight, then bias)."""
        keep_graph_fold_in_state(self, module.user, module.item, module.ui_adj,
                                 self.n_ui_layers, data.train)
        self.item_views_ = np.stack([degree_scaled(v, data.train) for v in module.item_views()])
        self.query_layers_ = np.stack([
            np.stack([_affine(query[0]), _affine(query[2])])
            for query in (module.vision_query, module.text_query)])
        self.prefer_layers_ = np.stack([_affine(gate[0]) for gate in (
            module.vision_prefer, module.text_prefer, module.fusion_prefer)])

    def user_vectors(self, user_ids: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """SMORE's user side (behaviour + modality side) from the given history, the item
        side as trained: the same formulas as `SMORENet.forward` for the user rows."""
        if not hasattr(self, "item_views_"):  # saved before fold-in existed
            return super().user_vectors(user_ids, history)
        behaviour = fold_in_users(ego_rows(self.user_ego_, user_ids), history, self.item_layers_)
        vision, text, fused = (user_rows(history, view) for view in self.item_views_)
        q = self.query_layers_
        vision = _softmax(_apply(q[0, 1], np.tanh(_apply(q[0, 0], fused)))) * vision
        text = _softmax(_apply(q[1, 1], np.tanh(_apply(q[1, 0], fused)))) * text
        p = self.prefer_layers_
        side = (_sigmoid(_apply(p[0], behaviour)) * vision
                + _sigmoid(_apply(p[1], behaviour)) * text
                + _sigmoid(_apply(p[2], behaviour)) * fused) / 3
        return (behaviour + side).astype(np.float32)


def _affine(layer: nn.Linear) -> np.ndarray:
    weight = layer.weight.detach().float().cpu().numpy()
    bias = (layer.bias.detach().float().cpu().numpy() if layer.bias is not None
            else np.zeros(weight.shape[0], np.float32))
    return np.hstack([weight, bias[:, None]])


def _apply(affine: np.ndarray, x: np.ndarray) -> np.ndarray:
    return x @ affine[:, :-1].T + affine[:, -1]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))
