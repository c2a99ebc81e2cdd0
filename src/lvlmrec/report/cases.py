"""Case studies: one user's history and the top-10 of two representations side by side.

Users are chosen, not cherry-picked in one direction: the first is the user on whom the
second representation beats the first by most (on the report metric), the second the user
on whom the first beats the second by most, further ones are drawn at random (seeded) among
users with a hit in either list. Top lists come from the evaluator's own ranking code
(same history mask, same candidates, same tie-break, and for sequential models the same
time order of the history); with timestamps the history is listed most recent first.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pandas as pd
from PIL import Image

from lvlmrec.data.schema import Dataset
from lvlmrec.errors import DataError
from lvlmrec.evaluate.ranking import iter_topk, restrict_columns
from lvlmrec.imageio import load_image
from lvlmrec.represent.fit import load_model
from lvlmrec.represent.sequential import user_sequence
from lvlmrec.workdir import Workdir


@dataclasses.dataclass
class CaseStudy:
    user_id: int
    reason: str
    history: list[int]
    targets: set[int]
    tops: dict[str, list[int]]
    values: dict[str, float]  # the report metric per representation for this user


def choose_users(per_user: pd.DataFrame, first: str, second: str, metric: str, n: int,
                 seed: int = 0) -> list[tuple[int, str]]:
    """(user_id, why this user) for up to n users evaluated for both representations."""
    wide = per_user.pivot(index="user_id", columns="representation", values=metric)
    wide = wide[[first, second]].dropna().sort_index()
    delta = wide[second] - wide[first]
    chosen: list[tuple[int, str]] = []
    for sign, winner, loser in ((1, second, first), (-1, first, second))[:n]:
        if not len(delta):
            break
        user = int((sign * delta).idxmax())
        if sign * delta[user] > 0:
            reason = f"largest {metric} gain of {winner} over {loser}"
        else:
            reason = f"{winner} never beats {loser} on {metric}; the closest user"
        if user not in dict(chosen):
            chosen.append((user, reason))
    pool = wide.index[(wide[first] > 0) | (wide[second] > 0)].difference([u for u, _ in chosen])
    rng = np.random.default_rng(seed)
    extra = rng.choice(pool.to_numpy(), size=min(max(n - len(chosen), 0), len(pool)),
                       replace=False)
    chosen += [(int(u), "drawn at random among users with a hit") for u in sorted(extra)]
    return chosen


def build_case_studies(workdir: Workdir, ds: Dataset, per_user: pd.DataFrame,
                       compare: list[str], metric: str, n: int, seed: int = 0, k: int = 10,
                       candidates: np.ndarray | None = None) -> list[CaseStudy]:
    first, second = compare
    users = choose_users(per_user, first, second, metric, n, seed)
    if not users:
        return []
    ids = np.array([u for u, _ in users])
    history = ds.matrix(("train", "valid"))
    target = ds.matrix(("test",))
    order = ds.order_matrix(("train", "valid"))  # what the evaluator gives sequential models
    if candidates is not None:
        history, target = restrict_columns(history, candidates), restrict_columns(target,
                                                                                  candidates)
        order = None if order is None else restrict_columns(order, candidates)
    tops = {}
    for name in compare:
        model = load_model(workdir, name)
        (_, top), = iter_topk(model, ids, history, k, block_size=len(ids),
                              candidates=candidates, show_progress=False, tie_seed=seed,
                              order=order)
        tops[name] = top
    values = per_user.set_index(["representation", "user_id"])[metric]
    out = []
    for row, (user, reason) in enumerate(users):
        out.append(CaseStudy(
            user_id=user, reason=reason,
            history=(history[user].indices.tolist() if order is None else
                     user_sequence(history, order, user)[::-1].tolist()),
            targets=set(target[user].indices.tolist()),
            tops={name: [int(i) for i in tops[name][row] if i >= 0] for name in compare},
            values={name: float(values.loc[(name, user)]) for name in compare},
        ))
    return out


def thumbnail(path, size: int = 96) -> bytes | None:
    """A small JPEG of an item image, or None when it has none or it cannot be read."""
    if path is None:
        return None
    try:
        img = load_image(path, target_size=size)
    except DataError:
        return None
    img.thumbnail((size, size), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()
