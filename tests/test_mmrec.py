"""MMRec format: export our dataset + embeddings, import it back unchanged, and import errors."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lvlmrec.cli import app
from lvlmrec.config import MMRecSource
from lvlmrec.data.mmrec import export_mmrec, load_mmrec
from lvlmrec.data.schema import Dataset, random_split
from lvlmrec.encode.store import save_embedding
from lvlmrec.errors import DataError, StageError
from lvlmrec.workdir import Workdir

N_USERS, N_ITEMS = 20, 15


@pytest.fixture
def prepared(tmp_path):
    """A prepared workdir with description and image embeddings, as after `encode`."""
    rng = np.random.default_rng(0)
    pairs = pd.DataFrame({"user_id": np.repeat(np.arange(N_USERS), 6),
                          "item_id": np.concatenate([rng.choice(N_ITEMS, 6, replace=False)
                                                     for _ in range(N_USERS)])})
    pairs["split"] = random_split(pairs["user_id"].to_numpy(), 0)
    pairs["rating"] = rng.integers(1, 6, len(pairs)).astype(np.float32)
    pairs["timestamp"] = rng.integers(10**9, 2 * 10**9, len(pairs))
    items = pd.DataFrame({"item_id": np.arange(N_ITEMS),
                          "source_id": [f"B0{i:08d}" for i in range(N_ITEMS)],
                          "title": "", "text": "", "image_path": ""})
    users = pd.DataFrame({"user_id": np.arange(N_USERS),
                          "source_id": [f"A{u:06d}X" for u in range(N_USERS)]})
    wd = Workdir(tmp_path / "run")
    ds = Dataset(items, pairs, users, {"format": "test"})
    ds.save(wd)
    text = rng.standard_normal((N_ITEMS, 384)).astype(np.float32)
    image = rng.standard_normal((N_ITEMS, 1280)).astype(np.float32)
    save_embedding(wd, "text_description", text, {"key": "t"})
    save_embedding(wd, "image_efficientnet", image, {"key": "i"})
    return wd, ds, text, image


def test_round_trip_import_of_export(prepared, tmp_path):
    wd, ds, text, image = prepared
    out = tmp_path / "mmrec" / "clothing"
    result = CliRunner().invoke(app, ["export-mmrec", "--workdir", str(wd.root), "--out",
                                      str(out), "--name", "clothing"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "clothing.inter", "clothing.yaml", "i_id_mapping.csv", "image_feat.npy",
        "text_feat.npy", "u_id_mapping.csv"]
    header = (out / "clothing.inter").read_text().splitlines()[0]
    assert header == "userID\titemID\trating\ttimestamp\tx_label"
    assert "inter_file_name: 'clothing.inter'" in (out / "clothing.yaml").read_text()

    back = load_mmrec(MMRecSource(source=out), show_progress=False)
    assert back.items["source_id"].tolist() == ds.items["source_id"].tolist()
    assert back.users["source_id"].tolist() == ds.users["source_id"].tolist()
    cols = ["user_id", "item_id", "split", "rating", "timestamp"]
    pd.testing.assert_frame_equal(back.interactions[cols], ds.interactions[cols],
                                  check_dtype=False)
    np.testing.assert_array_equal(back.features["text_feat"], text)
    np.testing.assert_array_equal(back.features["image_feat"], image)
    assert back.info["filters"][0]["n_dropped"] == 0


def test_export_can_take_any_source_and_checks_before_writing(prepared, tmp_path):
    wd, *_ = prepared
    out = tmp_path / "mm"
    with pytest.raises(StageError, match="embedding source 'title' not found.*available: "
                                         "efficientnet, description"):
        export_mmrec(wd, out, text_source="title")
    assert not out.exists()
    written = export_mmrec(wd, out, text_source="description", image_source=None)
    assert {p.name for p in written} == {"lvlmrec.inter", "text_feat.npy", "i_id_mapping.csv",
                                         "u_id_mapping.csv", "lvlmrec.yaml"}
    assert "vision_feature_file" not in (out / "lvlmrec.yaml").read_text()


def _mmrec_folder(tmp_path, rows, n_items=4, mapping=True):
    folder = tmp_path / "baby"
    folder.mkdir()
    lines = ["userID\titemID\trating\ttimestamp\tx_label"] + ["\t".join(map(str, r))
                                                               for r in rows]
    (folder / "baby.inter").write_text("\n".join(lines) + "\n")
    np.save(folder / "image_feat.npy", np.ones((n_items, 3)))
    np.save(folder / "text_feat.npy", np.ones((n_items, 2), dtype=np.float32))
    if mapping:  # comma-separated here: both separators occur in the wild
        (folder / "i_id_mapping.csv").write_text(
            "asin,itemID\n" + "".join(f"X{i},{i}\n" for i in range(n_items)))
    return folder


GOOD = [(0, 0, 5, 1, 0), (0, 1, 5, 2, 1), (0, 2, 5, 3, 2),
        (1, 1, 5, 1, 0), (1, 2, 5, 2, 1), (1, 3, 5, 3, 2)]


def test_import_drops_cold_users_like_mmrec(tmp_path):
    folder = _mmrec_folder(tmp_path, GOOD + [(2, 0, 4, 9, 2)])  # user 2: test only
    ds = load_mmrec(MMRecSource(source=folder), False)
    assert ds.n_users == 3 and len(ds.interactions) == 6
    assert ds.info["filters"][0]["n_dropped"] == 1
    assert ds.items["source_id"].tolist() == ["X0", "X1", "X2", "X3"]
    assert ds.users["source_id"].tolist() == ["0", "1", "2"]  # no user mapping: numbers


@pytest.mark.parametrize("rows,n_items,message", [
    (GOOD + [(1, 0, 5, 1, 3)], 4, r"baby.inter:8: x_label '3' is not 0 \(train\)"),
    (GOOD + [(1, 3, 5, 4, 0)], 4, r"duplicate interaction \(userID 1, itemID 3\) at lines 7 and 8"),
    (GOOD + [(1, "a", 5, 4, 0)], 4, r"baby.inter:8: itemID 'a' is not a non-negative integer"),
    (GOOD + [(1, 7, 5, 4, 0)], 4, r"image_feat.npy: 4 rows but .* give 8 items"),
])
def test_import_errors(tmp_path, rows, n_items, message):
    with pytest.raises(DataError, match=message):
        load_mmrec(MMRecSource(source=_mmrec_folder(tmp_path, rows, n_items)), False)


def test_import_needs_one_inter_file_or_a_name(tmp_path):
    folder = _mmrec_folder(tmp_path, GOOD)
    (folder / "other.inter").write_text((folder / "baby.inter").read_text())
    with pytest.raises(DataError, match="expected one <name>.inter file, found 2"):
        load_mmrec(MMRecSource(source=folder), False)
    assert load_mmrec(MMRecSource(source=folder, name="baby"), False).n_items == 4
