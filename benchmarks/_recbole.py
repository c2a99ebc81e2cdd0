"""RecBole's SASRec on exactly lvlmrec's split, scored by lvlmrec's evaluator (benchmarks only).

RecBole (Zhao et al., CIKM 2021; `pip install recbole`, the `bench` extra) trains and early-
stops its own SASRec with its own data pipeline and Trainer; this module only feeds it our
split and then scores its kept model through lvlmrec's evaluator, so both SASRecs are ranked
by the same code (full ranking, history masked, the same tie-break) with a per-user metric.

The split: RecBole's own leave-one-out (`eval_args.split: {LS: valid_and_test}`, `order:
TO`) over a time field written as each interaction's rank in lvlmrec's split (the train
items in lvlmrec's time order, then the valid item, then the test item). RecBole's last item
per user is thus our test item and the one before it our valid item, its training
sequences are our train items in our order; `fit` checks this on the built data loaders.

RecBole 1.2.1 predates numpy 2 and torch 2.6; the shims live here and never in src/:
- it imports `torch.utils.tensorboard` at module level, which needs the tensorboard package:
  a no-op `SummaryWriter` stands in (nothing is logged to TensorBoard);
- `Config.compatibility_settings` reads `np.float_` and friends, gone in numpy 2: it is
  replaced by one that sets the old aliases (`np.float`, `np.bool`, ... which RecBole's metrics
  still use) to the builtins;
- torch >= 2.6 loads checkpoints with `weights_only=True`, and RecBole's checkpoint pickles its
  Config: the best epoch's weights are read back here from the file this process just wrote;
- under pandas 3 its in-place `fillna` of a column does nothing (our file has no missing
  value, so nothing is lost) and warns: RecBole's warnings are silenced;
- it reads `--key=value` from `sys.argv` and writes `./log`, `./log_tensorboard` and
  `./saved`: it runs with a bare argv inside a temporary directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from lvlmrec.represent.sequential import ordered_rows

DATASET = "lvlmrec_split"


def version() -> str | None:
    """RecBole's version, or None when it is not installed."""
    if importlib.util.find_spec("recbole") is None:
        return None
    from importlib.metadata import version as _version

    return _version("recbole")


def _install_shims() -> None:
    if "torch.utils.tensorboard" not in sys.modules:
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            class SummaryWriter:  # RecBole logs scalars and hparams; nothing to keep here
                def __init__(self, *args, **kwargs):
                    pass

                def __getattr__(self, name):
                    return lambda *args, **kwargs: None

            fake = types.ModuleType("torch.utils.tensorboard")
            fake.SummaryWriter = SummaryWriter
            sys.modules["torch.utils.tensorboard"] = fake
    from recbole.config import Config

    def compatibility_settings(self) -> None:
        for name, value in (("bool", bool), ("int", int), ("float", float),
                            ("complex", complex), ("object", object), ("str", str),
                            ("long", int), ("unicode", str)):
            if name not in np.__dict__:
                setattr(np, name, value)

    Config.compatibility_settings = compatibility_settings


def split_ranks(ds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, rank) of every train/valid/test interaction: rank 1..n per user, the
    train items in lvlmrec's time order, then the valid item(s), then the test item(s)."""
    users, items, ranks = [], [], []
    offset = np.zeros(ds.n_users, dtype=np.int64)
    for part in ("train", "valid", "test"):
        order = sp.csr_matrix(ds.order_matrix(part))
        rows = np.repeat(np.arange(ds.n_users), np.diff(order.indptr))
        users.append(rows)
        items.append(order.indices.astype(np.int64))
        ranks.append(offset[rows] + order.data.astype(np.int64))
        offset += np.diff(order.indptr)
    return np.concatenate(users), np.concatenate(items), np.concatenate(ranks)


def write_inter(ds, folder: Path) -> Path:
    """RecBole's atomic `.inter` file of `ds`'s interactions, time = rank in our split."""
    users, items, ranks = split_ranks(ds)
    path = folder / DATASET / f"{DATASET}.inter"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u, i, r in zip(users.tolist(), items.tolist(), ranks.tolist()):
            f.write(f"{u}\t{i}\t{r}\n")
    return path


def read_log(path: str | Path) -> dict:
    """Per epoch, from a log of `fit` (its `recbole:` lines): training seconds and RecBole's
    own validation Recall@20 (its evaluator: full ranking, history not masked)."""
    text = Path(path).read_text()
    seconds = [float(x) for x in re.findall(r"epoch \d+ training \[time: ([\d.]+)s", text)]
    valid = [float(x) for x in re.findall(r"valid_score: ([\d.]+)", text)]
    return {"epochs_run": len(valid), "epoch_train_seconds": seconds,
            "recbole_valid_recall@20_by_epoch": valid}


def ran_to_the_end(epochs_run: int, best_epoch: int, epochs: int, patience: int) -> bool:
    """Whether a run whose log shows `epochs_run` epochs ended on its own: all `epochs`
    done, or RecBole's early stop (its `stopping_step` = `patience`: it stops once more than
    that many validations in a row failed to improve on the best)."""
    return epochs_run >= epochs or epochs_run - 1 - best_epoch > patience


class _Plain(logging.Formatter):
    """RecBole's log lines without their colour codes."""

    def format(self, record: logging.LogRecord) -> str:
        return re.sub(r"\x1b\[[0-9;]*m", "", super().format(record))


@contextlib.contextmanager
def _sandbox(folder: Path):
    """RecBole's cwd-relative outputs into `folder`; its argv parser sees no flags."""
    cwd, argv = os.getcwd(), sys.argv
    cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.chdir(folder)
    sys.argv = argv[:1]
    try:
        with warnings.catch_warnings():  # pandas 3 / torch deprecations inside RecBole
            warnings.filterwarnings("ignore", module=r"recbole\.")
            warnings.filterwarnings("ignore", message=".*non-writable tensors.*")
            yield
    finally:
        os.chdir(cwd)
        sys.argv = argv
        if cuda is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = cuda


class RecBoleSASRec:
    """RecBole's SASRec trained by RecBole's Trainer on our split; `score` is lvlmrec's
    Recommender scoring (each history read in time order, its last `max_len` items)."""

    needs_order = True

    def __init__(self, max_len: int = 50, hidden: int = 64, inner_size: int = 256,
                 n_layers: int = 2, n_heads: int = 2, dropout: float = 0.2,
                 epochs: int = 200, batch_size: int = 2048, learning_rate: float = 1e-3,
                 patience: int = 5, seed: int = 0, verbose: bool = True):
        self.max_len = max_len
        self.hidden = hidden
        self.inner_size = inner_size
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.seed = seed
        self.verbose = verbose

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                           if not k.endswith("_") and not k.startswith("_") and k != "verbose")
        return f"RecBoleSASRec({params})"

    def config_dict(self) -> dict:
        return {
            "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "MAX_ITEM_LIST_LENGTH": self.max_len,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO",
                          "group_by": "user", "mode": "full"},
            "metrics": ["Recall", "NDCG"], "topk": [10, 20], "valid_metric": "Recall@20",
            "loss_type": "CE", "train_neg_sample_args": None,
            "hidden_size": self.hidden, "inner_size": self.inner_size,
            "n_layers": self.n_layers, "n_heads": self.n_heads,
            "hidden_dropout_prob": self.dropout, "attn_dropout_prob": self.dropout,
            "epochs": self.epochs, "stopping_step": self.patience,
            "train_batch_size": self.batch_size, "learning_rate": self.learning_rate,
            "seed": self.seed, "reproducibility": True, "gpu_id": "", "worker": 0,
            "show_progress": False, "state": "INFO" if self.verbose else "WARNING",
        }

    def fit(self, ds, checkpoint: str | Path | None = None) -> RecBoleSASRec:
        """Train and early-stop on `ds`'s loo split (RecBole's own validation Recall@20).
        `checkpoint`: instead of training, the best-so-far checkpoint that RecBole saved in
        an earlier run of this same config that was stopped before it early-stopped."""
        _install_shims()
        from recbole.data import create_dataset, data_preparation
        from recbole.model.sequential_recommender import SASRec
        from recbole.trainer import Trainer
        from recbole.config import Config
        from recbole.utils import init_seed

        with tempfile.TemporaryDirectory(prefix="recbole-") as tmp, _sandbox(Path(tmp)):
            write_inter(ds, Path(tmp))
            config = Config(model="SASRec", dataset=DATASET, config_dict={
                **self.config_dict(), "data_path": tmp, "checkpoint_dir": str(Path(tmp) / "saved")})
            init_seed(config["seed"], config["reproducibility"])
            # RecBole's epoch lines go to a file (read back into `log_`) and, verbose, stdout
            log_file = Path(tmp) / "recbole_run.log"
            handlers: list[logging.Handler] = [logging.FileHandler(log_file)]
            if self.verbose:
                handlers.append(logging.StreamHandler(sys.stdout))
            for handler in handlers:
                handler.setFormatter(_Plain("  recbole: %(message)s"))
                logging.getLogger().addHandler(handler)
            logging.getLogger().setLevel(logging.INFO)
            try:
                dataset = create_dataset(config)
                train, valid, test = data_preparation(config, dataset)
                self._check_split(ds, dataset, valid, test)
                model = SASRec(config, train.dataset).to(config["device"])
                trainer = Trainer(config, model)
                t0 = time.perf_counter()
                if checkpoint is None:
                    trainer.fit(train, valid, saved=True, show_progress=False)
                    checkpoint = trainer.saved_model_file  # written by this process
                self.fit_seconds_ = time.perf_counter() - t0
                state = torch.load(checkpoint, map_location="cpu", weights_only=False)
                model.load_state_dict(state["state_dict"])
                model.eval()
                self.best_epoch_ = int(state["epoch"])  # 0-based, like lvlmrec's
                self.valid_recall_ = float(state["best_valid_score"])
                self.recbole_test_ = {k: float(v) for k, v in trainer.evaluate(
                    test, load_best_model=False, show_progress=False).items()}
            finally:
                for handler in handlers:
                    logging.getLogger().removeHandler(handler)
                    handler.close()
            self.log_ = read_log(log_file)
        self.model_ = model
        tokens = dataset.field2token_id["item_id"]
        # our item id -> RecBole's internal id (0 is its padding; -1: never seen)
        self.internal_ = np.array([tokens.get(str(i), -1) for i in range(ds.n_items)])
        return self

    @staticmethod
    def _check_split(ds, dataset, valid, test) -> None:
        """RecBole's valid/test targets per user are exactly ours."""
        tokens = dataset.field2id_token
        for loader, part in ((valid, "valid"), (test, "test")):
            inter = loader.dataset.inter_feat
            users = tokens["user_id"][inter["user_id"].numpy()].astype(np.int64)
            items = tokens["item_id"][inter["item_id"].numpy()].astype(np.int64)
            ours = ds.matrix(part).tocoo()
            if sorted(zip(users.tolist(), items.tolist())) != sorted(
                    zip(ours.row.tolist(), ours.col.tolist())):
                raise AssertionError(f"RecBole's {part} targets differ from lvlmrec's split")

    @torch.no_grad()
    def score(self, user_ids: np.ndarray, history: sp.csr_matrix,
              history_order: sp.csr_matrix | None = None) -> np.ndarray:
        seqs = ordered_rows(history, history_order)
        out = np.zeros((len(seqs), len(self.internal_)), dtype=np.float32)
        seen = self.internal_ >= 0
        for start in range(0, len(seqs), 512):
            block = [self.internal_[s][self.internal_[s] > 0][-self.max_len:]
                     for s in seqs[start:start + 512]]
            lengths = np.array([len(s) for s in block])
            tokens = np.zeros((len(block), self.max_len), dtype=np.int64)
            for r, s in enumerate(block):  # RecBole's sequences are left aligned
                tokens[r, :len(s)] = s
            keep = lengths > 0  # no history: all-zero scores, like lvlmrec's SASRec
            if not keep.any():
                continue
            scores = self.model_.full_sort_predict({
                "item_id_list": torch.from_numpy(tokens[keep]),
                "item_length": torch.from_numpy(lengths[keep])}).numpy()
            rows = np.zeros((len(block), self.internal_.size), dtype=np.float32)
            rows[np.ix_(keep, seen)] = scores[:, self.internal_[seen]]
            rows[np.ix_(keep, ~seen)] = scores.min() - 1.0
            out[start:start + len(block)] = rows
        return out
