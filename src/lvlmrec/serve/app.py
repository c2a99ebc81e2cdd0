"""The HTTP API and the web page over a finished run (`lvlmrec serve`).

A thin FastAPI layer over `ServedRun`: it validates parameters (422), turns unknown ids
into 404s that name the id, caps k, and renders items with their title, description and
image URL. Endpoints are plain `def`s, run in the server's thread pool: the numpy work
releases the GIL. The docs page (/docs) and the web page (/) load nothing from outside.
"""
# No `from __future__ import annotations` here: FastAPI reads the request body's model from
# the handler's annotation, and that model is built inside `create_app` (it knows max_k).

import functools
import io
import mimetypes
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from lvlmrec import __version__
from lvlmrec.errors import DataError
from lvlmrec.represent.sequential import latest_unique
from lvlmrec.serve.service import (Representation, SearchUnavailable, ServedRun, _saved_config,
                                   load_run, ranked_representations)
from lvlmrec.workdir import Workdir

IdType = Literal["internal", "source"]
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: default cap on k for every list endpoint
MAX_K = 100
#: explanations name at most this many history items per recommended item
N_REASONS = 3
_PLACEHOLDER = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="128" height="128" viewBox="0 0 128 128">'
    '<rect width="128" height="128" fill="#eceff1"/><path d="M34 88l20-26 14 18 10-12 16 20z" '
    'fill="#b0bec5"/><circle cx="84" cy="46" r="8" fill="#b0bec5"/></svg>'
).encode()


# --------------------------------------------------------------------------- response models
class Item(BaseModel):
    item_id: int
    source_id: str
    title: str
    description: str = Field(description="the active description set's text ('' if none)")
    image_url: str


class ItemDetail(Item):
    text: str = Field(description="the dataset's own item text (metadata)")
    n_interactions: int = Field(description="train + valid interactions")
    n_test: int


class Reason(BaseModel):
    item_id: int
    title: str
    weight: float = Field(description="cosine, or the score gain of this item alone")


class Scored(Item):
    rank: int
    score: float


class Recommended(Scored):
    hit: bool | None = Field(None, description="in the user's test split (null: unknown)")
    because: list[Reason] = Field(default_factory=list,
                                  description="the history items that scored it highest")


class Recommendations(BaseModel):
    representation: str
    user_id: int | None
    k: int
    n_history: int
    n_test: int | None
    n_hits: int | None
    explanation: str = Field(description="how `because` was computed")
    items: list[Recommended]


class Neighbours(BaseModel):
    representation: str
    item_id: int | None = None
    query: str | None = None
    items: list[Scored]


class UserSummary(BaseModel):
    user_id: int
    source_id: str
    n_history: int
    n_test: int


class UserDetail(UserSummary):
    history: list[Item] = Field(description="train + valid items (up to `limit`)")
    test: list[Item] = Field(description="held-out test items (up to `limit`)")


class RepresentationInfo(BaseModel):
    name: str
    kind: str | None
    text: str | None
    vision: str | None
    scoring: str | None
    model: str
    has_item_vectors: bool
    searchable: bool
    explanation: str
    metrics: dict[str, float]


class Representations(BaseModel):
    default: str
    metric: str = Field(description="the report metric (report.metric) `ranked` sorts by")
    ranked: list[str] = Field(description="names, best first by the report metric's test "
                              "value; unevaluated ones last")
    representations: list[RepresentationInfo]


class Health(BaseModel):
    status: str
    version: str
    workdir: str
    n_items: int
    n_users: int
    has_test: bool
    index: str
    max_k: int
    representations: list[str]
    searchable: list[str]
    skipped: dict[str, str]


# --------------------------------------------------------------------------- the app
def create_app(workdir: str | Path | Workdir | None = None, index: str = "exact",
               max_k: int = MAX_K, run: ServedRun | None = None) -> FastAPI:
    """The app over a finished run: pass its `workdir`, or a `run` already loaded."""
    from fastapi_offline import FastAPIOffline

    if run is None:
        if workdir is None:
            raise ValueError("create_app needs a workdir or a loaded run")
        run = load_run(workdir, index=index, max_k=max_k)
    app = FastAPIOffline(
        title="lvlmrec",
        version=__version__,
        description=f"Recommendations of the finished run in `{run.workdir.root}`: "
                    f"{run.n_items} items, {run.n_users} users, "
                    f"{len(run.representations)} representations. The page is at /.",
    )
    n_history = np.diff(run.history.indptr)
    n_test = np.diff(run.test.indptr)
    item_history = np.bincount(run.history.indices, minlength=run.n_items)
    item_test = np.bincount(run.test.indices, minlength=run.n_items)
    lower_source_ids = [s.lower() for s in run.user_source_ids]
    default_rep = next(iter(run.representations))
    saved = _saved_config(run.workdir)
    metric = saved.report.metric if saved is not None else "recall@10"
    ranked = ranked_representations(run, metric)

    def k_query():
        return Query(10, ge=1, le=max_k, description=f"number of items (at most {max_k})")

    def rep_query(default: str = default_rep):
        return Query(None, description=f"a representation name (default {default!r})")

    @app.exception_handler(SearchUnavailable)
    def _search_unavailable(request: Request, err: SearchUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=400)

    # ------------------------------------------------------------------ lookups
    def get_representation(name: str | None) -> Representation:
        if name is None:
            return run.representations[default_rep]
        rep = run.representations.get(name)
        if rep is None:
            raise HTTPException(404, f"unknown representation {name!r}; known: "
                                     f"{', '.join(run.representations)}")
        return rep

    user_by_source = {s: i for i, s in enumerate(run.user_source_ids)}
    item_by_source = {s: i for i, s in enumerate(run.item_source_ids)}

    def resolve(raw: str | int, id_type: str, what: str, where: str = "") -> int:
        """A path or body id: the run's row number (id_type=internal) or the original id
        (id_type=source); unknown: 404 naming the id; not an integer: 422."""
        if id_type == "source":
            found = (user_by_source if what == "user" else item_by_source).get(str(raw))
            if found is None:
                raise HTTPException(404, f"unknown {what} source id {str(raw)!r}{where}")
            return found
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise HTTPException(422, f"{what}_id {str(raw)!r}{where} is not an integer: pass "
                                     "id_type=source for an original id") from None
        n = run.n_users if what == "user" else run.n_items
        if not 0 <= value < n:
            raise HTTPException(404, f"unknown {what}_id {value}{where}: {what} ids are "
                                     f"0..{n - 1}")
        return value

    def id_type_query():
        return Query("internal", description="internal: the run's 0-based id; source: the "
                     "original id (ASIN, user name, movie id)")

    def item(i: int) -> dict:
        return {"item_id": i, "source_id": run.item_source_ids[i], "title": run.titles[i],
                "description": run.descriptions[i], "image_url": f"/items/{i}/image"}

    def scored(ids: np.ndarray, scores: np.ndarray) -> list[dict]:
        return [{**item(int(i)), "rank": r + 1, "score": float(s)}
                for r, (i, s) in enumerate(zip(ids, scores))]

    def recommendations(rep: Representation, history: np.ndarray, k: int, user_id: int,
                        explain: bool, test: np.ndarray | None) -> dict:
        ids, scores = rep.recommend(history, k, user_id=user_id)
        reasons = rep.explain(ids, history, user_id, N_REASONS) if explain \
            else [[] for _ in ids]
        hits = None if test is None else np.isin(ids, test)
        out = scored(ids, scores)
        for r, row in enumerate(out):
            row["hit"] = None if hits is None else bool(hits[r])
            row["because"] = [{"item_id": h, "title": run.titles[h], "weight": w}
                              for h, w in reasons[r]]
        return {"representation": rep.name, "user_id": None if user_id < 0 else user_id,
                "k": k, "n_history": len(history),
                "n_test": None if test is None else len(test),
                "n_hits": None if hits is None else int(hits.sum()),
                "explanation": rep.explanation, "items": out}

    def user_summary(u: int) -> dict:
        return {"user_id": u, "source_id": run.user_source_ids[u],
                "n_history": int(n_history[u]), "n_test": int(n_test[u])}

    # ------------------------------------------------------------------ page
    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # ------------------------------------------------------------------ run
    @app.get("/health", response_model=Health, tags=["run"])
    def health() -> dict:
        """Liveness and what is being served."""
        return {"status": "ok", "version": __version__, "workdir": str(run.workdir.root),
                "n_items": run.n_items, "n_users": run.n_users, "has_test": run.has_test,
                "index": run.index_kind, "max_k": max_k,
                "representations": list(run.representations), "searchable": run.searchable,
                "skipped": run.skipped}

    @app.get("/representations", response_model=Representations, tags=["run"])
    def list_representations() -> dict:
        """The served representations, their settings and test metrics."""
        return {"default": default_rep, "metric": metric, "ranked": ranked,
                "representations": [r.info() for r in run.representations.values()]}

    # ------------------------------------------------------------------ users
    @app.get("/users", response_model=list[UserSummary], tags=["users"])
    def users(q: str = Query("", max_length=200, description="user id prefix or part of "
                             "the source id"),
              limit: int = Query(20, ge=1, le=1000), offset: int = Query(0, ge=0)) -> list:
        """List users, optionally those matching `q`."""
        if not q:
            ids = range(offset, min(run.n_users, offset + limit))
        else:
            needle = q.strip().lower()
            ids = [u for u in range(run.n_users)
                   if str(u).startswith(needle) or needle in lower_source_ids[u]]
            ids = ids[offset:offset + limit]
        return [user_summary(u) for u in ids]

    @app.get("/users/random", response_model=UserSummary, tags=["users"])
    def random_user() -> dict:
        """A random user with a history (and test items, when the run has a test split)."""
        eligible = np.flatnonzero((n_history > 0) & ((n_test > 0) | (not run.has_test)))
        if len(eligible) == 0:
            raise HTTPException(404, "no user has a history")
        return user_summary(int(np.random.default_rng().choice(eligible)))

    @app.get("/users/{user_id}", response_model=UserDetail, tags=["users"])
    def user(user_id: str, limit: int = Query(100, ge=0, le=10_000,
                                              description="history items to list"),
             id_type: IdType = id_type_query()) -> dict:
        """A user's history (train + valid) and their held-out test items."""
        user_id = resolve(user_id, id_type, "user")
        return {**user_summary(user_id),
                "history": [item(int(i)) for i in run.user_history(user_id)[:limit]],
                "test": [item(int(i)) for i in run.user_test(user_id)[:limit]]}

    @app.get("/users/{user_id}/recommendations", response_model=Recommendations,
             tags=["recommendations"])
    def user_recommendations(
            user_id: str, k: int = k_query(), representation: str | None = rep_query(),
            explain: bool = Query(True, description="name the history items behind each "
                                  "recommendation"),
            id_type: IdType = id_type_query()) -> dict:
        """Top-k for a known user; their train + valid items are the history and are never
        recommended; test items are marked as hits."""
        user_id = resolve(user_id, id_type, "user")
        return recommendations(get_representation(representation), run.user_sequence(user_id),
                               k, user_id, explain,
                               run.user_test(user_id) if run.has_test else None)

    class HistoryRequest(BaseModel):
        items: list[int | str] = Field(min_length=1, max_length=10_000,
                                       description="item ids the user interacted with, oldest "
                                       "first (sequential representations read this order; "
                                       "a repeated item counts at its last place)")
        id_type: IdType = Field("internal", description="internal or source: how `items` "
                                "name the items")
        k: int = Field(10, ge=1, le=max_k)
        representation: str | None = None
        explain: bool = True

    @app.post("/recommendations", response_model=Recommendations, tags=["recommendations"])
    def history_recommendations(body: HistoryRequest) -> dict:
        """Top-k for a new or anonymous user given the items they interacted with."""
        ids = [resolve(i, body.id_type, "item", " in the request's items") for i in body.items]
        history = latest_unique(ids)
        return recommendations(get_representation(body.representation), history, body.k, -1,
                               body.explain, None)

    # ------------------------------------------------------------------ items
    @app.get("/items/{item_id}", response_model=ItemDetail, tags=["items"])
    def item_detail(item_id: str, id_type: IdType = id_type_query()) -> dict:
        """Title, description, metadata text and image URL of one item."""
        item_id = resolve(item_id, id_type, "item")
        return {**item(item_id), "text": run.texts[item_id],
                "n_interactions": int(item_history[item_id]), "n_test": int(item_test[item_id])}

    @functools.lru_cache(maxsize=4096)
    def thumbnail(item_id: int, size: int) -> bytes | None:
        from lvlmrec.imageio import load_image

        path = run.image_file(item_id)
        if path is None:
            return None
        try:
            img = load_image(path, target_size=size)
        except DataError:
            return None
        img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        return buf.getvalue()

    @app.get("/items/{item_id}/image", tags=["items"],
             responses={200: {"content": {"image/*": {}}}})
    def item_image(item_id: str, size: int | None = Query(
            None, ge=16, le=1024, description="longest side of a JPEG thumbnail; omit for "
            "the original file"), id_type: IdType = id_type_query()) -> Response:
        """The item's image (an SVG placeholder when it has none or it cannot be read)."""
        item_id = resolve(item_id, id_type, "item")
        try:
            path = run.image_file(item_id)
        except PermissionError:
            raise HTTPException(403, f"item {item_id}: its image file lies outside the run's "
                                "folders; it is not served") from None
        headers = {"Cache-Control": "public, max-age=3600"}
        if path is not None:
            if size is None:
                return FileResponse(path, headers=headers,
                                    media_type=mimetypes.guess_type(path.name)[0])
            data = thumbnail(item_id, size)
            if data is not None:
                return Response(data, media_type="image/jpeg", headers=headers)
        return Response(_PLACEHOLDER, media_type="image/svg+xml",
                        headers={**headers, "X-Placeholder": "1"})

    @app.get("/items/{item_id}/similar", response_model=Neighbours, tags=["items"])
    def similar(item_id: str, k: int = k_query(),
                representation: str | None = rep_query(),
                id_type: IdType = id_type_query()) -> dict:
        """The items nearest to one item in a representation's item space."""
        item_id = resolve(item_id, id_type, "item")
        rep = get_representation(representation)
        ids, scores = rep.similar(item_id, k)
        return {"representation": rep.name, "item_id": item_id, "items": scored(ids, scores)}

    # ------------------------------------------------------------------ search
    @app.get("/search", response_model=Neighbours, tags=["items"])
    def search(q: str = Query(..., min_length=1, max_length=1000,
                              description="free text, e.g. 'red striped summer dress'"),
               k: int = k_query(),
               representation: str | None = rep_query("the first searchable one")) -> dict:
        """Items whose text embedding is nearest to the query's, embedded with the run's
        text encoder (only `kind: text` representations can answer)."""
        if not q.strip():
            raise HTTPException(422, "the query is empty")
        if representation is not None:
            get_representation(representation)  # 404 for an unknown name
        rep, ids, scores = run.search(q, k, representation)
        return {"representation": rep.name, "query": q, "items": scored(ids, scores)}

    return app
