"""Trained fusions: shapes, loss, seeding, early stopping, save/load, and that they learn."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from lvlmrec.data.synthetic import generate_synthetic
from lvlmrec.evaluate.ranking import evaluate_model
from lvlmrec.errors import ConfigError
from lvlmrec.represent.base import Recommender, TrainData
from lvlmrec.represent.baselines import Popularity
from lvlmrec.represent.fusion import (AttentionFusion, CrossModalFusion, FusionNet,
                                      GatingFusion, info_nce)

FUSIONS = (AttentionFusion, GatingFusion, CrossModalFusion)
SMALL = {"hidden": 32, "heads": 2, "batch_size": 64}


def _random_data(n_users=120, n_items=80, seed=0, valid_density=0.03):
    rng = np.random.default_rng(seed)
    train = sp.random(n_users, n_items, density=0.08, format="csr", random_state=seed)
    valid = sp.random(n_users, n_items, density=valid_density, format="csr",
                      random_state=seed + 1)
    train.data[:] = 1
    valid.data[:] = 1
    emb = {"t": rng.normal(size=(n_items, 12)), "v": rng.normal(size=(n_items, 20))}
    return TrainData(train=train, valid=valid, embedding=lambda s: emb[s], show_progress=False)


@pytest.fixture(scope="module")
def data():
    return _random_data()


@pytest.mark.parametrize("cls", FUSIONS)
@pytest.mark.parametrize("scoring", ["mean", "max"])
def test_fits_and_scores_with_the_right_shapes(data, cls, scoring):
    model = cls("t", "v", epochs=2, scoring=scoring, **SMALL).fit(data)
    assert model.item_vectors_.shape == (80, 32)
    np.testing.assert_allclose(np.linalg.norm(model.item_vectors_, axis=1), 1, rtol=1e-5)
    scores = model.score(np.arange(5), data.train[:5])
    assert scores.shape == (5, 80) and scores.dtype == np.float32
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("objective", ["cooccur", "user"])
def test_training_loss_decreases(data, objective):
    model = AttentionFusion("t", "v", epochs=6, patience=99, objective=objective,
                            **SMALL).fit(data)
    assert len(model.train_loss_) == 6
    assert model.train_loss_[-1] < model.train_loss_[0]


def test_same_seed_same_model_other_seed_other_model(data):
    a = GatingFusion("t", "v", epochs=2, seed=3, **SMALL).fit(data)
    b = GatingFusion("t", "v", epochs=2, seed=3, **SMALL).fit(data)
    c = GatingFusion("t", "v", epochs=2, seed=4, **SMALL).fit(data)
    np.testing.assert_array_equal(a.item_vectors_, b.item_vectors_)
    assert a.train_loss_ == b.train_loss_
    assert not np.allclose(a.item_vectors_, c.item_vectors_)


def test_early_stopping_on_validation():
    # nothing to find on validation: recall stays 0, so training stops after `patience` epochs
    flat = _random_data(valid_density=0.0)
    model = AttentionFusion("t", "v", epochs=15, patience=2, **SMALL).fit(flat)
    assert model.valid_recall_ == [0.0, 0.0, 0.0]
    assert model.best_epoch_ == 0


def test_keeps_the_best_epochs_weights(data):
    model = CrossModalFusion("t", "v", epochs=6, patience=2, **SMALL).fit(data)
    best = int(np.argmax(model.valid_recall_))
    assert model.best_epoch_ == best
    assert data.valid_recall(model, k=20) == pytest.approx(model.valid_recall_[best])
    np.testing.assert_allclose(
        model.transform(data.embedding("t"), data.embedding("v")), model.item_vectors_,
        atol=1e-6)


@pytest.mark.parametrize("cls", FUSIONS)
def test_save_load_round_trip(tmp_path, data, cls):
    model = cls("t", "v", epochs=2, scoring="max", **SMALL).fit(data)
    written = model.save(tmp_path / "m")
    assert tmp_path / "m" / "weights.pt" in written
    loaded = Recommender.load(tmp_path / "m")
    assert type(loaded) is cls and loaded.scoring == "max"
    hist = data.train[:7]
    np.testing.assert_array_equal(model.score(np.arange(7), hist),
                                  loaded.score(np.arange(7), hist))
    rng = np.random.default_rng(9)
    new_text, new_vision = rng.normal(size=(4, 12)), rng.normal(size=(4, 20))
    np.testing.assert_array_equal(model.transform(new_text, new_vision),
                                  loaded.transform(new_text, new_vision))
    assert loaded.best_epoch_ == model.best_epoch_


@pytest.mark.parametrize("mode", FusionNet.MODES)
def test_missing_modalities(mode):
    torch.manual_seed(0)
    net = FusionNet(3, 4, hidden=8, mode=mode, heads=2, dropout=0.0).eval()
    text = torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1.0, 0]])
    vision = torch.tensor([[0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 0], [0, 0, 1.0, 0]])
    with torch.no_grad():
        out = net(text, vision)
        only_text = net(text[:1], torch.zeros(1, 4))
        other_vision = net(text[:1], torch.tensor([[0, 0, 0, 1.0]]))
    assert torch.isfinite(out).all()
    assert out[0].abs().sum() > 0 and out[1].abs().sum() > 0
    assert out[2].abs().sum() == 0  # neither modality: a zero vector
    # an item without vision is fused from its text alone, whatever vision would have said
    assert torch.allclose(out[0], only_text[0])
    assert not torch.allclose(only_text[0], other_vision[0])


def test_info_nce_exclusion_drops_known_positives():
    torch.manual_seed(0)
    q, k = torch.randn(4, 6), torch.randn(4, 6)
    exclude = torch.zeros(4, 4, dtype=torch.bool)
    exclude[0, 2] = True
    exclude[1, 1] = True  # the diagonal is never excluded
    masked = info_nce(q, k, 0.5, exclude)
    logits = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(k, dim=1).T
    logits = logits / 0.5
    rows = [torch.logsumexp(logits[0, [0, 1, 3]], 0) - logits[0, 0]]
    rows += [torch.logsumexp(logits[i], 0) - logits[i, i] for i in (1, 2, 3)]
    assert masked.item() == pytest.approx(torch.stack(rows).mean().item(), rel=1e-5)


def test_rejects_unknown_objective(data):
    with pytest.raises(ConfigError, match="objective"):
        AttentionFusion("t", "v", objective="nope").fit(data)


@pytest.mark.parametrize("cls", FUSIONS)
def test_bfloat16_training_stays_close_to_float32(data, cls):
    # opt-in precision: the same seed and batches, the steps under bfloat16 autocast; the
    # fused catalog itself is computed in float32
    full = cls("t", "v", epochs=2, patience=9, **SMALL).fit(data)
    half = cls("t", "v", epochs=2, patience=9, precision="bfloat16", **SMALL).fit(data)
    assert half.item_vectors_.dtype == np.float32
    assert not np.array_equal(full.item_vectors_, half.item_vectors_)
    cosine = (full.item_vectors_ * half.item_vectors_).sum(1)
    assert cosine.min() > 0.98
    np.testing.assert_allclose(half.train_loss_, full.train_loss_, rtol=0.02)


def test_rejects_unknown_precision(data):
    with pytest.raises(ConfigError, match="precision"):
        AttentionFusion("t", "v", precision="float16").fit(data)


@pytest.fixture(scope="module")
def attribute_catalog(tmp_path_factory):
    return attribute_data(tmp_path_factory.mktemp("catalog"))


def attribute_data(folder):
    """A 300-item synthetic catalog whose modalities are ground-truth attribute one-hots:
    'text' knows the category, 'vision' knows colours and pattern."""
    ds = generate_synthetic(folder, n_items=300, n_users=400, seed=1, image_size=32,
                            show_progress=False)
    items = ds.items

    def one_hot(column):
        values = sorted(v for v in items[column].unique() if v)
        index = {v: i for i, v in enumerate(values)}
        out = np.zeros((len(items), len(values)), np.float32)
        for row, v in enumerate(items[column]):
            if v:
                out[row, index[v]] = 1
        return out

    emb = {"text": one_hot("category"),
           "vision": np.hstack([one_hot("colour"), 0.5 * one_hot("colour2"),
                                one_hot("pattern")])}
    data = TrainData(train=ds.matrix("train"), valid=ds.matrix("valid"),
                     embedding=lambda s: emb[s], show_progress=False)
    return ds, data


def _test_recall(model, ds):
    history, target = ds.matrix(("train", "valid")), ds.matrix(("test",))
    per_user = evaluate_model(model, np.arange(ds.n_users), history, target, ks=[20],
                              show_progress=False)
    return per_user["recall@20"].mean()


def test_trained_fusion_of_informative_modalities_beats_popularity(attribute_catalog):
    ds, data = attribute_catalog
    fusion = AttentionFusion("text", "vision", hidden=64, epochs=10).fit(data)
    popularity = Popularity().fit(data)
    fused, popular = _test_recall(fusion, ds), _test_recall(popularity, ds)
    assert fused > 1.2 * popular, (fused, popular)
