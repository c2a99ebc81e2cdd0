"""Where the benchmarks find the shared real data: `../shared/data` beside the checkout (a git
worktree sits one level deeper). Never copied into the repository."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MOVIELENS = next((p / "shared" / "data" / "movielens-100k-posters"
                  for p in (ROOT.parent, ROOT.parent.parent)
                  if (p / "shared" / "data" / "movielens-100k-posters").is_dir()),
                 ROOT.parent / "shared" / "data" / "movielens-100k-posters")
