"""The description store: `descriptions/descriptions.sqlite`.

One row per (item_id, model, prompt_hash): the text, or the error that stopped it. Rows are
committed after every batch, so a killed run loses at most the batch in flight, and a later
run only asks the describer for items that have no text yet (errors are retried).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS descriptions (
    item_id     INTEGER NOT NULL,
    model       TEXT    NOT NULL,
    prompt_hash TEXT    NOT NULL,
    text        TEXT,
    error       TEXT,
    seconds     REAL,
    created     REAL    NOT NULL,
    PRIMARY KEY (item_id, model, prompt_hash)
);
CREATE TABLE IF NOT EXISTS images (
    item_id     INTEGER PRIMARY KEY,
    image_hash  TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS prompts (
    prompt_hash TEXT PRIMARY KEY,
    name        TEXT,
    template    TEXT,
    settings    TEXT,
    created     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS attributes (
    item_id     INTEGER NOT NULL,
    model       TEXT    NOT NULL,
    prompt_hash TEXT    NOT NULL,
    attributes  TEXT    NOT NULL,
    PRIMARY KEY (item_id, model, prompt_hash)
);
"""


class DescriptionStore:
    """Thin wrapper over sqlite3; safe to open from several processes (WAL journal).

    `read_only=True` opens a finished store as an immutable file: nothing is written next to
    it (not even the -wal/-shm files a plain read-only connection leaves behind), so a server
    can read a run it must not modify. Rows a live writer has not checkpointed are not seen.
    """

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        if read_only:
            if not self.path.is_file():
                raise FileNotFoundError(f"no description store at {self.path}")
            uri = f"{self.path.resolve().as_uri()}?immutable=1"
            self._conn = sqlite3.connect(uri, uri=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=60)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)
        self._conn.commit()

    def close(self) -> None:
        if self._conn is not None:
            if not self.read_only:
                # fold the WAL back into the main file so the store is one self-contained file
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None

    def __enter__(self) -> DescriptionStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ writes
    def register_prompt(self, prompt_hash: str, name: str, template: str, settings: str) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO prompts VALUES (?, ?, ?, ?, ?)",
            (prompt_hash, name, template, settings, time.time()),
        )
        self._conn.commit()

    def put_many(
        self,
        model: str,
        prompt_hash: str,
        rows: Iterable[tuple[int, str | None, str | None, float | None]],
    ) -> None:
        """Insert or replace (item_id, text, error, seconds) rows and commit."""
        now = time.time()
        self._conn.executemany(
            "INSERT OR REPLACE INTO descriptions VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(int(i), model, prompt_hash, text, err, secs, now) for i, text, err, secs in rows],
        )
        self._conn.commit()

    def sync_images(self, hashes: dict[int, str]) -> list[int]:
        """Record the content hash of each item's image; forget every description of an
        item whose image changed since it was described, so it is described again.
        Returns the ids of those items."""
        old = dict(self._conn.execute("SELECT item_id, image_hash FROM images"))
        changed = [i for i, h in hashes.items() if i in old and old[i] != h]
        self._conn.executemany("DELETE FROM descriptions WHERE item_id=?",
                               [(int(i),) for i in changed])
        self._conn.executemany("INSERT OR REPLACE INTO images VALUES (?, ?)",
                               [(int(i), h) for i, h in hashes.items() if old.get(i) != h])
        self._conn.commit()
        return changed

    # ------------------------------------------------------------------ reads
    def done_ids(self, model: str, prompt_hash: str) -> set[int]:
        """Items that already have a text (errors are not done: they are retried)."""
        cur = self._conn.execute(
            "SELECT item_id FROM descriptions WHERE model=? AND prompt_hash=? "
            "AND text IS NOT NULL",
            (model, prompt_hash),
        )
        return {row[0] for row in cur}

    def texts(self, model: str, prompt_hash: str) -> dict[int, str]:
        cur = self._conn.execute(
            "SELECT item_id, text FROM descriptions WHERE model=? AND prompt_hash=? "
            "AND text IS NOT NULL",
            (model, prompt_hash),
        )
        return dict(cur.fetchall())

    def errors(self, model: str, prompt_hash: str) -> dict[int, str]:
        cur = self._conn.execute(
            "SELECT item_id, error FROM descriptions WHERE model=? AND prompt_hash=? "
            "AND text IS NULL",
            (model, prompt_hash),
        )
        return dict(cur.fetchall())

    def keys(self) -> list[tuple[str, str, int]]:
        """(model, prompt_hash, n_texts) for every description set in the store."""
        cur = self._conn.execute(
            "SELECT model, prompt_hash, COUNT(text) FROM descriptions GROUP BY model, prompt_hash"
        )
        return cur.fetchall()

    # ------------------------------------------------------------------ describer sets
    def stats(self, model: str, prompt_hash: str) -> dict[str, float]:
        """Texts, errors and the seconds the texts took, summed over every run of the set."""
        n_texts, n_errors, seconds = self._conn.execute(
            "SELECT COUNT(text), COUNT(*) - COUNT(text), COALESCE(SUM(seconds), 0) "
            "FROM descriptions WHERE model=? AND prompt_hash=?", (model, prompt_hash)).fetchone()
        return {"n_texts": int(n_texts), "n_errors": int(n_errors), "seconds": float(seconds)}

    def adopt(self, model: str, old_hash: str, new_hash: str) -> int:
        """Copy a set's rows to a new key (a key scheme changed, the texts did not);
        returns the rows copied. Rows already under the new key are kept."""
        cur = self._conn.execute(
            "INSERT OR IGNORE INTO descriptions SELECT item_id, model, ?, text, error, "
            "seconds, created FROM descriptions WHERE model=? AND prompt_hash=?",
            (new_hash, model, old_hash))
        self._conn.commit()
        return cur.rowcount

    def put_attributes(self, model: str, prompt_hash: str,
                       rows: Iterable[tuple[int, str]]) -> None:
        """Store (item_id, attributes JSON) parsed from a set's texts, beside them."""
        self._conn.executemany(
            "INSERT OR REPLACE INTO attributes VALUES (?, ?, ?, ?)",
            [(int(i), model, prompt_hash, a) for i, a in rows])
        self._conn.commit()

    def attributes(self, model: str, prompt_hash: str) -> dict[int, str]:
        """item_id -> attributes JSON of a set (structured prompts only)."""
        try:
            cur = self._conn.execute(
                "SELECT item_id, attributes FROM attributes WHERE model=? AND prompt_hash=?",
                (model, prompt_hash))
        except sqlite3.OperationalError:  # a read-only store older than the table
            return {}
        return dict(cur.fetchall())
