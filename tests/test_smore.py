import numpy as np
import pandas as pd
import pytest
import torch

from lvlmrec.config import StrategyConfig
from lvlmrec.data.synthetic import generate_synthetic
from lvlmrec.errors import DataError
from lvlmrec.evaluate.ranking import evaluate_model
from lvlmrec.represent.base import Recommender, TrainData
from lvlmrec.represent.cf import LightGCN
from lvlmrec.represent.registry import build
from lvlmrec.represent.smore import SMORE, info_nce, spectrum_fusion


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _circular_convolution(v: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(v (*) t)[n] = sum_m v[m] t[(n - m) mod d], row by row, in O(d^2)."""
    d = v.shape[1]
    out = np.zeros_like(v)
    for n in range(d):
        for m in range(d):
            out[:, n] += v[:, m] * t[:, (n - m) % d]
    return out


@pytest.mark.parametrize("d", [64, 7])
def test_spectrum_fusion_with_unit_filters_is_scaled_circular_convolution(d):
    """With W_v = W_t = W_f = 1 and norm='ortho' (rfft scaled by 1/sqrt(d), irfft by
    sqrt(d)/d): denoised v = v, denoised t = t, fused = (v (*) t) / sqrt(d)."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5, d))
    t = rng.normal(size=(5, d))
    one = torch.ones(1, d // 2 + 1, dtype=torch.complex128)
    den_v, den_t, fused = spectrum_fusion(torch.from_numpy(v), torch.from_numpy(t),
                                          one, one, one)
    np.testing.assert_allclose(den_v.numpy(), v, atol=1e-12)
    np.testing.assert_allclose(den_t.numpy(), t, atol=1e-12)
    np.testing.assert_allclose(fused.numpy() * np.sqrt(d), _circular_convolution(v, t),
                               atol=1e-10)


def test_spectral_filter_is_a_circular_convolution_with_its_kernel():
    """A filter W = rfft(kernel) (unnormalised) makes denoising the circular convolution
    of a row with `kernel`: a learned global filter over the feature dimensions."""
    rng = np.random.default_rng(1)
    d = 16
    v = rng.normal(size=(3, d))
    kernel = rng.normal(size=d)
    w = torch.fft.rfft(torch.from_numpy(kernel))[None, :]  # unnormalised spectrum
    den_v, _, _ = spectrum_fusion(torch.from_numpy(v), torch.from_numpy(v), w, w, w)
    np.testing.assert_allclose(den_v.numpy(), _circular_convolution(v, np.tile(kernel, (3, 1))),
                               atol=1e-10)


def test_info_nce_matches_its_definition():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    sims = np.exp(an @ bn.T / 0.2)
    expect = -np.log(np.diag(sims) / sims.sum(axis=1)).mean()
    got = info_nce(torch.from_numpy(a), torch.from_numpy(b), 0.2).item()
    assert got == pytest.approx(expect, rel=1e-9)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A small demo catalog with ground-truth attribute one-hots as the two modalities."""
    ds = generate_synthetic(tmp_path_factory.mktemp("demo"), n_items=300, n_users=500,
                            image_size=32, show_progress=False)
    items = ds.items

    def onehot(*cols):
        return pd.get_dummies(items[list(cols)].astype(str)).to_numpy(np.float32)

    sources = {"text": onehot("category", "brand"),
               "vision": onehot("category", "colour", "colour2", "pattern")}
    data = TrainData(train=ds.matrix("train"), valid=ds.matrix("valid"),
                     embedding=lambda s: sources[s], show_progress=False, seed=0)
    return ds, data


def test_smore_trains_and_keeps_the_best_epoch(demo, tmp_path):
    _, data = demo
    model = SMORE(text="text", vision="vision", embedding_dim=16, epochs=6, patience=6,
                  learning_rate=0.01).fit(data)
    assert model.loss_history_[-1] < model.loss_history_[0]
    assert model.user_vectors_.shape == (data.n_users, 16)
    assert model.item_vectors_.shape == (data.n_items, 16)
    assert model.best_epoch_ == int(model.valid_history_[np.argmax(model.valid_history_[:, 1]), 0])
    # save / load: same scores; weights.pt holds the trained features and filters
    model.save(tmp_path / "smore")
    loaded = Recommender.load(tmp_path / "smore")
    users = np.arange(20)
    np.testing.assert_array_equal(loaded.score(users, data.train[users]),
                                  model.score(users, data.train[users]))
    weights = torch.load(tmp_path / "smore" / "weights.pt")
    assert weights["fusion_filter"].shape == (1, 9, 2)
    assert not torch.equal(weights["text_features"],
                           torch.from_numpy(data.embedding("text")))  # trained, as upstream


def test_frozen_features_stay_out_of_the_weights(demo):
    _, data = demo
    model = SMORE(text="text", vision="vision", embedding_dim=8, epochs=1,
                  train_features=False).fit(data)
    assert "text_features" not in model._weights and "text_proj.weight" in model._weights


def test_smore_is_seeded(demo):
    _, data = demo
    kwargs = dict(text="text", vision="vision", embedding_dim=8, epochs=2, dropout=0.1)
    a = SMORE(seed=3, **kwargs).fit(data)
    b = SMORE(seed=3, **kwargs).fit(data)
    assert np.array_equal(a.item_vectors_, b.item_vectors_)  # bitwise on one thread
    assert np.array_equal(a.loss_history_, b.loss_history_)


def test_smore_checks_its_inputs(demo):
    _, data = demo
    bad = TrainData(train=data.train, valid=data.valid, show_progress=False,
                    embedding=lambda s: np.ones((3, 4)))
    with pytest.raises(DataError, match="'text'.*one row per item"):
        SMORE(text="text", vision="vision", epochs=1).fit(bad)


def test_registry_feeds_text_and_vision_sources():
    model = build(StrategyConfig(name="smore_title_vision", kind="smore", text="title",
                                 vision="efficientnet", params={"epochs": 5}), seed=7)
    assert isinstance(model, SMORE)
    assert (model.text, model.vision, model.epochs, model.seed) == ("title", "efficientnet",
                                                                     5, 7)
    assert model.vision_knn_k == 40 and model.text_knn_k == 10 and model.reg_weight == 1e-5


def test_smore_and_lightgcn_beat_popularity_on_demo_data(demo):
    ds, data = demo
    users = np.arange(ds.n_users)
    history, test = ds.matrix(("train", "valid")), ds.matrix("test")

    def test_recall(model):
        return evaluate_model(model, users, history, test, ks=[20],
                              show_progress=False)["recall@20"].mean()

    class Popularity:
        counts = np.asarray(data.train.sum(axis=0), dtype=np.float32).ravel()

        def score(self, user_ids, hist):
            return np.tile(self.counts, (len(user_ids), 1))

    popularity = test_recall(Popularity())
    smore = test_recall(SMORE(text="text", vision="vision", learning_rate=0.01,
                              epochs=5).fit(data))
    lightgcn = test_recall(LightGCN(learning_rate=0.01, epochs=5).fit(data))
    assert smore > popularity * 1.2
    assert lightgcn > popularity * 1.2


def test_forward_matches_a_dense_step_by_step_reference(demo):
    """The official forward written out densely in numpy with the module's own weights."""
    _, data = demo
    model = SMORE(text="text", vision="vision", embedding_dim=8, n_ui_layers=2)
    net = model.build_module(data).eval()
    w = {k: v.detach().double().numpy() for k, v in net.state_dict().items()}

    def linear(x, name, bias=True):
        return x @ w[f"{name}.weight"].T + (w[f"{name}.bias"] if bias else 0)

    def sigmoid(x):
        return 1 / (1 + np.exp(-x))

    def softmax(x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def dense(adj):
        return adj.matrix.to_dense().double().numpy()

    def spectral(x, filt, y=None):
        f = np.fft.rfft(x, axis=1, norm="ortho")
        if y is not None:
            f = f * np.fft.rfft(y, axis=1, norm="ortho")
        return np.fft.irfft(f * (filt[..., 0] + 1j * filt[..., 1]), n=8, axis=1, norm="ortho")

    v = linear(w["vision_features"], "vision_proj")
    t = linear(w["text_features"], "text_proj")
    item, user = w["item"], w["user"]
    ui, block = dense(net.ui_adj), dense(net.ui_block)
    ego = np.vstack([user, item])
    behaviour = (ego + ui @ ego + ui @ ui @ ego) / 3
    views = {}
    for name, conv, graph in [("vision", spectral(v, w["vision_filter"]), net.vision_adj),
                              ("text", spectral(t, w["text_filter"]), net.text_adj),
                              ("fusion", spectral(v, w["fusion_filter"], t), net.fusion_adj)]:
        items = dense(graph) @ (item * sigmoid(linear(conv, f"{name}_gate.0")))
        views[name] = np.vstack([block @ items, items])

    def query(name):
        return softmax(linear(np.tanh(linear(views["fusion"], f"{name}_query.0")),
                              f"{name}_query.2", bias=False))

    side = (sigmoid(linear(behaviour, "vision_prefer.0")) * query("vision") * views["vision"]
            + sigmoid(linear(behaviour, "text_prefer.0")) * query("text") * views["text"]
            + sigmoid(linear(behaviour, "fusion_prefer.0")) * views["fusion"]) / 3
    with torch.no_grad():
        final, got_side, got_behaviour = (x.double().numpy() for x in net.forward())
    np.testing.assert_allclose(got_behaviour, behaviour, atol=1e-5)
    np.testing.assert_allclose(got_side, side, atol=1e-5)
    np.testing.assert_allclose(final, behaviour + side, atol=1e-5)
