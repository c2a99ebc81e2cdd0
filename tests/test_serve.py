"""The HTTP API and the web page over a tiny finished run (the demo pipeline, 60 items)."""

import dataclasses
import io
import re
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from lvlmrec.cli import app as cli_app
from lvlmrec.cli import load_run_config
from lvlmrec.config import StrategyConfig, named_config
from lvlmrec.data.schema import Dataset
from lvlmrec.errors import ConfigError, StageError
from lvlmrec.pipeline import run_pipeline
from lvlmrec.represent.base import Recommender
from lvlmrec.represent.fit import load_model
from lvlmrec.serve.app import STATIC_DIR, create_app
from lvlmrec.serve.browser import IMAGES_LOADED, browser_available, headless_chromium, serving
from lvlmrec.serve.index import ExactIndex, HnswIndex, unit_rows
from lvlmrec.serve.service import Representation, load_run
from lvlmrec.workdir import Workdir

STRATEGIES = [
    {"name": "lvlm_text", "kind": "text", "text": "description"},
    {"name": "title_text", "kind": "text", "text": "title"},
    {"name": "lvlm_text_max", "kind": "text", "text": "description", "scoring": "max"},
    {"name": "vision_only", "kind": "vision", "vision": "efficientnet"},
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    cfg = load_run_config(named_config("demo"), None,
                          ["dataset.image_size=48", "describe.attributes.max_labels=0",
                           "describe.describers.colours.attributes.n_colours=1"],
                          {"dataset": {"n_items": 60, "n_users": 40}})
    cfg.represent.strategies = [StrategyConfig(**s) for s in STRATEGIES]
    cfg.evaluate.baseline = "title_text"
    wd = Workdir(tmp_path_factory.mktemp("served"))
    run_pipeline(cfg, wd, show_progress=False)
    return wd


@pytest.fixture(scope="module")
def run(workdir):
    return load_run(workdir)


@pytest.fixture(scope="module")
def client(run):
    return TestClient(create_app(run=run))


@pytest.fixture(scope="module")
def dataset(workdir):
    return Dataset.load(workdir, features=False)


def _user_with_test(run):
    n_hist = np.diff(run.history.indptr)
    n_test = np.diff(run.test.indptr)
    return int(np.flatnonzero((n_hist >= 3) & (n_test > 0))[0])


# --------------------------------------------------------------------------- run and users
def test_health_and_representations(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["n_items"] == 60 and health["n_users"] == 40
    assert health["representations"] == [s["name"] for s in STRATEGIES]  # config order
    assert health["searchable"] == ["lvlm_text", "title_text", "lvlm_text_max"]
    assert health["has_test"] and health["index"] == "exact" and health["skipped"] == {}
    reps = client.get("/representations").json()
    assert reps["default"] == "lvlm_text"
    by_name = {r["name"]: r for r in reps["representations"]}
    assert by_name["vision_only"]["kind"] == "vision" and not by_name["vision_only"]["searchable"]
    assert by_name["lvlm_text_max"]["scoring"] == "max"
    assert 0 <= by_name["title_text"]["metrics"]["recall@10"] <= 1


def test_users_list_search_and_detail(client, dataset):
    listed = client.get("/users?limit=5&offset=2").json()
    assert [u["user_id"] for u in listed] == [2, 3, 4, 5, 6]
    source = dataset.users["source_id"].iloc[7]
    assert client.get(f"/users?q={source}").json()[0]["user_id"] == 7
    random_user = client.get("/users/random").json()
    assert random_user["n_history"] > 0 and random_user["n_test"] > 0
    detail = client.get("/users/7").json()
    inter = dataset.interactions
    mine = inter[inter["user_id"] == 7]
    assert {i["item_id"] for i in detail["history"]} == \
        set(mine.loc[mine["split"] != "test", "item_id"])
    assert {i["item_id"] for i in detail["test"]} == set(mine.loc[mine["split"] == "test",
                                                                  "item_id"])
    assert detail["history"][0]["image_url"] == f"/items/{detail['history'][0]['item_id']}/image"


# --------------------------------------------------------------------------- recommendations
def test_user_recommendations_mask_history_and_mark_hits(client, run, workdir):
    user = _user_with_test(run)
    history = run.user_history(user)
    test = set(run.user_test(user).tolist())
    body = client.get(f"/users/{user}/recommendations?k=20&representation=vision_only").json()
    ids = [it["item_id"] for it in body["items"]]
    assert len(ids) == 20 and body["representation"] == "vision_only"
    assert not set(ids) & set(history.tolist())
    assert [it["hit"] for it in body["items"]] == [i in test for i in ids]
    assert body["n_hits"] == len(set(ids) & test) and body["n_test"] == len(test)
    # the same ranking as the model itself, history = train + valid
    expected, scores = load_model(workdir, "vision_only").recommend(history, k=20, user_id=user)
    assert ids == expected.tolist()
    assert np.allclose([it["score"] for it in body["items"]], scores, atol=1e-5)
    assert [it["rank"] for it in body["items"]] == list(range(1, 21))


def test_explanations_decompose_the_content_score(client, run):
    user = _user_with_test(run)
    history = run.user_history(user)
    vecs = run.representations["lvlm_text"].unit_vectors
    body = client.get(f"/users/{user}/recommendations?k=5&representation=lvlm_text").json()
    assert body["explanation"] == "cosine"
    for it in body["items"]:
        cosines = vecs[history] @ vecs[it["item_id"]]
        # mean scoring: the score is exactly the mean cosine to the history items
        assert it["score"] == pytest.approx(cosines.mean(), abs=1e-5)
        top = np.lexsort((history, -cosines))[:3]
        assert [r["item_id"] for r in it["because"]] == history[top].tolist()
        assert [r["weight"] for r in it["because"]] == pytest.approx(cosines[top], abs=1e-5)
        assert it["because"][0]["title"] == run.titles[it["because"][0]["item_id"]]
    body = client.get(f"/users/{user}/recommendations?k=5&representation=lvlm_text_max").json()
    for it in body["items"]:  # max scoring: the score is the strongest reason's weight
        assert it["score"] == pytest.approx(it["because"][0]["weight"], abs=1e-5)
    quiet = client.get(f"/users/{user}/recommendations?k=5&explain=false").json()
    assert all(it["because"] == [] for it in quiet["items"])


class CoCounts(Recommender):
    """Item-item co-occurrence scores: a model without item vectors."""

    def __init__(self, sim=None):
        self.sim_ = sim

    @property
    def n_items(self):
        return self.sim_.shape[0]

    def score(self, user_ids, history):
        return np.asarray(history @ self.sim_, dtype=np.float32)


class Popular(CoCounts):
    """Scores that ignore the history."""

    def score(self, user_ids, history):
        return np.tile(self.sim_.sum(axis=0).astype(np.float32), (history.shape[0], 1))


def test_fallback_explanation_without_item_vectors():
    sim = np.zeros((6, 6), np.float32)
    sim[0, 4], sim[1, 4], sim[2, 4] = 0.2, 0.9, 0.5  # item 4 owes most to item 1
    sim[0, 5] = 0.7
    rep = Representation("cooc", CoCounts(sim))
    assert rep.explanation == "single-item score gain" and not rep.searchable
    ids, _ = rep.recommend(np.array([0, 1, 2]), k=2)
    assert ids.tolist() == [4, 5]
    reasons = rep.explain(ids, np.array([0, 1, 2]))
    assert reasons[0] == [(1, pytest.approx(0.9)), (2, pytest.approx(0.5)),
                          (0, pytest.approx(0.2))]
    assert reasons[1] == [(0, pytest.approx(0.7))]  # zero gains are not reasons
    assert Representation("pop", Popular(sim)).explain(ids, np.array([0, 1, 2])) == [[], []]


def test_anonymous_history(client, workdir):
    body = client.post("/recommendations", json={"items": [3, 9, 9, 21], "k": 7,
                                                 "representation": "title_text"}).json()
    expected, _ = load_model(workdir, "title_text").recommend([3, 9, 21], k=7)
    assert [it["item_id"] for it in body["items"]] == expected.tolist()
    assert body["user_id"] is None and body["n_history"] == 3 and body["n_hits"] is None
    assert all(it["hit"] is None and it["because"] for it in body["items"])


def test_source_ids_reach_the_same_users_and_items(client, run):
    source_user, source_item = run.user_source_ids[7], run.item_source_ids[5]
    assert client.get(f"/users/{source_user}?id_type=source").json() == \
        client.get("/users/7").json()
    assert client.get(f"/users/{source_user}/recommendations?id_type=source&k=5").json() == \
        client.get("/users/7/recommendations?k=5").json()
    assert client.get(f"/items/{source_item}?id_type=source").json()["item_id"] == 5
    assert client.get(f"/items/{source_item}/similar?id_type=source").json() == \
        client.get("/items/5/similar").json()
    assert client.get(f"/items/{source_item}/image?id_type=source&size=32").content == \
        client.get("/items/5/image?size=32").content
    by_source = client.post("/recommendations", json={
        "items": [run.item_source_ids[i] for i in (3, 9)], "id_type": "source"}).json()
    assert by_source == client.post("/recommendations", json={"items": [3, 9]}).json()
    reps = client.get("/representations").json()
    assert reps["metric"] == "recall@10" and sorted(reps["ranked"]) == sorted(run.representations)
    recall = {r["name"]: r["metrics"]["recall@10"] for r in reps["representations"]}
    assert [recall[n] for n in reps["ranked"]] == sorted(recall.values(), reverse=True)


@pytest.mark.parametrize("method,url,body,status,needle", [
    ("get", "/users/40/recommendations", None, 404, "user_id 40"),
    ("get", "/users/-1", None, 404, "user_id -1"),
    ("get", "/users/x/recommendations", None, 422, "user_id"),
    ("get", "/users/1/recommendations?k=0", None, 422, "k"),
    ("get", "/users/1/recommendations?k=101", None, 422, "less than or equal to 100"),
    ("get", "/users/1/recommendations?representation=nope", None, 404, "'nope'"),
    ("get", "/items/60", None, 404, "item_id 60"),
    ("get", "/items/60/image", None, 404, "item_id 60"),
    ("get", "/items/61/similar", None, 404, "item_id 61"),
    ("get", "/items/1/image?size=5000", None, 422, "size"),
    ("post", "/recommendations", {"items": [1, 60]}, 404, "item_id 60"),
    ("post", "/recommendations", {"items": []}, 422, "items"),
    ("post", "/recommendations", {"items": [1], "k": 500}, 422, "k"),
    ("post", "/recommendations", {"item": [1]}, 422, "items"),
    ("get", "/search", None, 422, "q"),
    ("get", "/search?q=%20%20", None, 422, "empty"),
    ("get", "/search?q=red&representation=vision_only", None, 400, "vision_only"),
    ("get", "/users/nobody?id_type=source", None, 404, "unknown user source id 'nobody'"),
    ("get", "/items/nothing/similar?id_type=source", None, 404, "item source id 'nothing'"),
    ("get", "/items/x", None, 422, "id_type=source"),
    ("get", "/users/1?id_type=other", None, 422, "id_type"),
    ("post", "/recommendations", {"items": ["nope"], "id_type": "source"}, 404, "'nope'"),
])
def test_errors_name_what_is_wrong(client, method, url, body, status, needle):
    response = getattr(client, method)(url, **({"json": body} if body is not None else {}))
    assert response.status_code == status, response.text
    assert needle in response.text


def test_every_status_code_is_documented(client, run, tmp_path):
    """docs/serve.md's status table lists every code the server's code answers, and every
    listed code but 500 is answered by some request."""
    from importlib.metadata import version
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    table = (root / "docs" / "serve.md").read_text().split("### Status codes")[1]
    table = table.split("| endpoint |")[0]
    documented = {int(c) for c in re.findall(r"^\| (\d{3}) \|", table, re.M)}
    source = (root / "src" / "lvlmrec" / "serve" / "app.py").read_text()
    raised = {int(a or b) for a, b in re.findall(r"HTTPException\((\d{3})|status_code=(\d{3})",
                                                 source)}
    assert raised and raised <= documented, raised - documented

    outside = tmp_path / "outside.png"
    Image.new("RGB", (4, 4), "red").save(outside)
    paths = list(run.image_paths)
    paths[1] = outside
    refusing = TestClient(create_app(run=dataclasses.replace(run, image_paths=paths)))
    etag = client.get("/static/app.js").headers["etag"]
    ranges = tuple(map(int, version("starlette").split(".")[:2])) >= (0, 39)
    answered = {
        200: client.get("/health"),
        304: client.get("/static/app.js", headers={"If-None-Match": etag}),
        400: client.get("/search?q=red&representation=vision_only"),
        403: refusing.get("/items/1/image"),
        404: client.get(f"/users/{run.n_users}"),
        405: client.get("/recommendations"),
        422: client.get("/users/1/recommendations?k=0"),
    }
    if ranges:  # older Starlette sends the whole file
        size = run.image_paths[4].stat().st_size
        answered[206] = client.get("/items/4/image", headers={"Range": "bytes=0-9"})
        answered[416] = client.get("/items/4/image", headers={"Range": f"bytes={size + 10}-"})
        assert client.get("/items/4/image", headers={"Range": "bytes=x"}).status_code == 400
        assert answered[206].content == run.image_paths[4].read_bytes()[:10]
    for code, response in answered.items():
        assert response.status_code == code, (code, response.status_code, response.text)
    assert documented - {500} == set(answered) | ({206, 416} if not ranges else set())


# --------------------------------------------------------------------------- items
def test_item_detail_and_image(client, run, dataset):
    detail = client.get("/items/4").json()
    assert detail["title"] == dataset.items["title"].iloc[4]
    assert detail["description"] and detail["description"] == run.descriptions[4]
    original = client.get("/items/4/image")
    assert original.status_code == 200 and original.headers["content-type"] == "image/png"
    assert original.content == run.image_paths[4].read_bytes()
    thumb = client.get("/items/4/image?size=32")
    assert thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 32


def test_missing_image_gets_a_placeholder(run):
    paths = list(run.image_paths)
    paths[2] = None
    paths[3] = paths[3].with_name("missing.png")
    client = TestClient(create_app(run=dataclasses.replace(run, image_paths=paths)))
    for i in (2, 3):
        response = client.get(f"/items/{i}/image?size=64")
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/svg+xml"
        assert response.headers["x-placeholder"] == "1"


def test_similar_items_match_the_model(client, workdir):
    body = client.get("/items/8/similar?k=6&representation=vision_only").json()
    expected, scores = load_model(workdir, "vision_only").similar_items(8, k=6)
    assert [it["item_id"] for it in body["items"]] == expected.tolist()
    assert np.allclose([it["score"] for it in body["items"]], scores, atol=1e-5)
    assert 8 not in [it["item_id"] for it in body["items"]]


# --------------------------------------------------------------------------- search
def test_search_finds_an_item_by_its_title(client, run):
    title = run.titles[11]
    body = client.get("/search", params={"q": title, "k": 3,
                                         "representation": "title_text"}).json()
    assert body["representation"] == "title_text" and body["query"] == title
    assert body["items"][0]["title"] == title
    assert body["items"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    default = client.get("/search", params={"q": "a red dress"}).json()
    assert default["representation"] == "lvlm_text" and len(default["items"]) == 10


def test_search_without_a_text_representation(run):
    reps = {"vision_only": run.representations["vision_only"]}
    client = TestClient(create_app(run=dataclasses.replace(run, representations=reps)))
    response = client.get("/search?q=dress")
    assert response.status_code == 400
    assert "no representation searchable by text" in response.json()["detail"]


# --------------------------------------------------------------------------- index
def test_hnsw_index_agrees_with_exact():
    pytest.importorskip("hnswlib")
    rng = np.random.default_rng(0)
    vecs = unit_rows(rng.standard_normal((500, 16)).astype(np.float32))
    vecs[7] = 0  # an item without a vector is never returned
    exact, ann = ExactIndex(vecs), HnswIndex(vecs, max_k=20)
    for q in (3, 100, 499):
        e_ids, e_scores = exact.search(vecs[q], 10, exclude=(q,))
        a_ids, a_scores = ann.search(vecs[q], 10, exclude=(q,))
        assert q not in a_ids and 7 not in a_ids and 7 not in e_ids
        assert len(set(a_ids) & set(e_ids)) >= 9
        exact_score = dict(zip(e_ids.tolist(), e_scores))
        for i, s in zip(a_ids.tolist(), a_scores):  # same cosines where both found an item
            assert i not in exact_score or s == pytest.approx(exact_score[i], abs=1e-5)
    assert exact.search(np.zeros(16, np.float32), 5)[0].size == 0


def test_app_with_hnsw_index(workdir):
    pytest.importorskip("hnswlib")
    client = TestClient(create_app(workdir, index="hnsw"))
    assert client.get("/health").json()["index"] == "hnsw"
    exact = TestClient(create_app(run=load_run(workdir)))
    for rep in ("lvlm_text", "vision_only"):
        url = f"/items/5/similar?k=10&representation={rep}"
        a = [it["item_id"] for it in client.get(url).json()["items"]]
        e = [it["item_id"] for it in exact.get(url).json()["items"]]
        assert len(set(a) & set(e)) >= 9  # 60 items: HNSW is all but exact


# --------------------------------------------------------------------------- robustness
def _listing(root):
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in root.rglob("*"))


def test_serving_writes_nothing_to_the_run(workdir):
    before = _listing(workdir.root)
    client = TestClient(create_app(workdir))
    user = 3
    for url in ("/health", f"/users/{user}", f"/users/{user}/recommendations",
                "/items/2/image?size=40", "/items/2/similar", "/search?q=blue"):
        assert client.get(url).status_code == 200, url
    assert _listing(workdir.root) == before


def test_broken_model_is_skipped_and_reported(workdir, tmp_path):
    copy = Workdir(tmp_path / "run")
    shutil.copytree(workdir.root, copy.root)
    broken = copy.model_dir("vision_only")
    (broken / "model.json").write_text('{"class": "lvlmrec.nowhere.Model", "params": {}}')
    stray = copy.model_dir("not_configured")  # a folder the config does not name is ignored
    shutil.copytree(copy.model_dir("title_text"), stray)
    health = TestClient(create_app(copy)).get("/health").json()
    assert "vision_only" in health["skipped"] and "lvlmrec.nowhere" in health["skipped"][
        "vision_only"] and "not a registered" in health["skipped"]["vision_only"]
    assert "lvlm_text" in health["representations"]
    assert "not_configured" not in [*health["representations"], *health["skipped"]]


def test_serve_command_errors(tmp_path):
    result = CliRunner().invoke(cli_app, ["serve", "-w", str(tmp_path / "missing")])
    assert isinstance(result.exception, StageError) and "no run directory" in str(
        result.exception)
    result = CliRunner().invoke(cli_app, ["serve", "-w", str(tmp_path), "--index", "faiss"])
    assert isinstance(result.exception, ConfigError) and "exact, hnsw" in str(result.exception)


def test_docs_and_page_load_nothing_from_outside(client):
    docs = client.get("/docs")
    assert docs.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert assets and all(a.startswith("/") for a in assets), assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    assert "/users/{user_id}/recommendations" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and "app.js" in page.text
    for path in STATIC_DIR.iterdir():
        assert not re.search(r"https?://", path.read_text()), path
        assert client.get(f"/static/{path.name}").status_code == 200


# --------------------------------------------------------------------------- the page
@pytest.mark.skipif(not browser_available(),
                    reason="the browser test needs Debian's chromium and chromium-driver "
                           "(apt-get install -y chromium chromium-driver)")
def test_page_shows_a_users_recommendations(run, tmp_path):
    pytest.importorskip("selenium")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # a user whose top 10 (left column: the best representation) has a test hit
    api = TestClient(create_app(run=run))
    best = api.get("/representations").json()["ranked"][0]
    user, api_hits = next(
        (u, hits) for u in range(run.n_users)
        for hits in [[it["hit"] for it in api.get(
            f"/users/{u}/recommendations?representation={best}").json()["items"]]]
        if any(hits) and not all(hits))
    with serving(create_app(run=run)) as url, headless_chromium(tmp_path / "profile") as driver:
        driver.get(url + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#right .rep-select option"))
                   == len(run.representations))
        # the page opens on a random user, compared by the two best representations
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("Showing"))
        assert "user=" in driver.current_url
        assert driver.execute_script("return [...document.querySelectorAll('.rep-select')]"
                                     ".map(s => s.value)") == \
            api.get("/representations").json()["ranked"][:2]

        def submit(text: str) -> None:
            """Type a user, submit, and wait until that view has finished rendering."""
            driver.execute_script("document.getElementById('status').textContent = ''")
            user_input = driver.find_element(By.ID, "user-input")
            user_input.clear()
            user_input.send_keys(text)
            driver.find_element(By.CSS_SELECTOR, "#user-form button[type=submit]").click()
            wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("Showing"))

        # typing an original id (the default) or a run id reaches the same user
        submit(run.user_source_ids[user])
        assert f"user={user}&" in driver.current_url
        driver.execute_script("document.getElementById('id-type').value = 'internal'")
        submit(str(user))
        for column in ("#left", "#right"):
            wait.until(lambda d: d.execute_script(IMAGES_LOADED, f"{column} .rec-image", 10))
        n_history = len(run.user_history(user))
        wait.until(lambda d: d.execute_script(IMAGES_LOADED, "#history img", n_history))
        assert f"User {user}" in driver.find_element(By.ID, "user-title").text
        # hits marked on the page are the API's hits
        cards = driver.find_elements(By.CSS_SELECTOR, "#left .card")
        assert ["hit" in c.get_attribute("class").split() for c in cards] == api_hits
        assert "because" in cards[0].text and cards[0].get_attribute("title")
        # every resource came from the server itself
        urls = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        assert urls and all(u.startswith(url) for u in urls), urls
        # the URL hash reopens the same view
        assert f"user={user}" in driver.current_url
