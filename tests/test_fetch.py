"""fetch-images against a local HTTP server with real images and faults; resume; stage records."""

import io
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from lvlmrec.cli import app
from lvlmrec.config import CsvSource, RunConfig
from lvlmrec.data.fetch import fetch_images
from lvlmrec.data.schema import Dataset, dataset_digest
from lvlmrec.data.synthetic import generate_synthetic
from lvlmrec.errors import DataError
from lvlmrec.imageio import load_image
from lvlmrec.pipeline import run_pipeline
from lvlmrec.workdir import StageBook, Workdir


def _image_bytes(fmt, colour, size=(40, 30)):
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


JPEG, PNG = _image_bytes("JPEG", "red"), _image_bytes("PNG", "blue")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, body, status=200, length=None, ctype="image/jpeg"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length is not False:
            self.send_header("Content-Length", str(len(body) if length is None else length))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        hits = self.server.hits
        hits[self.path] += 1
        try:
            if self.path == "/a.jpg":
                self._send(JPEG)
            elif self.path == "/b.png":
                self._send(PNG, ctype="image/png")
            elif self.path == "/slow.jpg":
                time.sleep(2)
                self._send(JPEG)
            elif self.path == "/truncated.jpg":
                self._send(JPEG[: len(JPEG) // 2], length=len(JPEG))
                self.close_connection = True
            elif self.path == "/page.jpg":
                self._send(b"<html>sorry</html>", ctype="text/html")
            elif self.path == "/big.jpg":
                self._send(b"\xff" * 300_000)
            elif self.path == "/bigstream.jpg":  # no Content-Length: the cap must still hold
                self.close_connection = True
                self._send(b"\xff" * 300_000, length=False)
            elif self.path == "/flaky.png" and hits[self.path] == 1:
                self._send(b"busy", status=503, ctype="text/plain")
            elif self.path == "/flaky.png":
                self._send(PNG, ctype="image/png")
            else:
                self._send(b"not found", status=404, ctype="text/plain")
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.hits = Counter()
    httpd.handle_error = lambda request, address: None  # clients hang up on faults on purpose
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


ROUTES = ["/a.jpg", "/b.png", "/missing.jpg", "/slow.jpg", "/truncated.jpg", "/page.jpg",
          "/big.jpg", "/bigstream.jpg", "/flaky.png", "", "/a.jpg", "/b.png"]
SOURCE_IDS = [f"SKU{i}" for i in range(len(ROUTES) - 1)] + ["odd id/with space"]
OPTIONS = dict(concurrency=4, timeout=0.5, retries=1, max_bytes=100_000, backoff=0.01,
               show_progress=False)


def _prepared(tmp_path, base_url):
    """A CSV catalog whose items only have URLs, prepared by the pipeline."""
    local = tmp_path / "own.jpg"
    local.write_bytes(JPEG)
    pd.DataFrame({"sku": SOURCE_IDS, "name": [f"Item {i}" for i in range(len(ROUTES))],
                  "picture": [base_url + r if r else "" for r in ROUTES]}
                 ).to_csv(tmp_path / "items.csv", index=False)
    n = len(ROUTES)
    pd.DataFrame([{"user": f"u{u}", "sku": SOURCE_IDS[(u + j) % n]}
                  for u in range(n) for j in range(4)]).to_csv(tmp_path / "events.csv",
                                                                index=False)
    cfg = RunConfig(dataset=CsvSource(items=tmp_path / "items.csv",
                                      interactions=tmp_path / "events.csv", item_col="sku",
                                      user_col="user", title_col="name", image_col="picture"))
    wd = Workdir(tmp_path / "run")
    run_pipeline(cfg, wd, only=["prepare"], show_progress=False)
    return cfg, wd


def test_fetch_downloads_checks_and_logs_every_fault(tmp_path, server):
    httpd, base = server
    cfg, wd = _prepared(tmp_path, base)
    before = dataset_digest(wd)
    summary, failures = fetch_images(wd, **OPTIONS)
    assert (summary.n_with_url, summary.n_fetched, summary.n_failed) == (11, 5, 6)
    assert summary.n_with_image == 5 and "5 of 12 items have an image" in summary.line()

    items = Dataset.load(wd, features=False).items
    paths = dict(zip(items["source_id"], items["image_path"]))
    assert paths["SKU0"] == "dataset/images/SKU0.jpg" and paths["SKU1"] == "dataset/images/SKU1.png"
    assert paths["SKU8"] == "dataset/images/SKU8.png"  # 503 once, then fetched
    assert paths["odd id/with space"].startswith("dataset/images/id-")
    assert load_image(wd.resolve(paths["SKU0"])).size == (40, 30)
    assert not list((wd.dataset_dir / "images").glob(".*"))  # no temporary files left

    errors = pd.read_csv(wd.dataset_dir / "fetch_errors.csv").set_index("source_id")
    assert set(errors.index) == {"SKU2", "SKU3", "SKU4", "SKU5", "SKU6", "SKU7"}
    assert errors.loc["SKU2", "error"] == "HTTP 404" and errors.loc["SKU2", "attempts"] == 1
    assert "Timeout" in errors.loc["SKU3", "error"] and errors.loc["SKU3", "attempts"] == 2
    assert "RemoteProtocolError" in errors.loc["SKU4", "error"]
    assert errors.loc["SKU5", "error"].startswith("not a readable image (18 bytes)")
    assert errors.loc["SKU6", "error"] == "too big: 300000 bytes > max_bytes 100000"
    assert errors.loc["SKU7", "error"].startswith("too big: more than max_bytes")
    assert httpd.hits["/flaky.png"] == 2 and httpd.hits["/missing.jpg"] == 1

    # the dataset changed on purpose: new digest, prepare stays current, downstream reruns
    rec = StageBook(wd).get("prepare")
    assert rec.digest == dataset_digest(wd) != before
    summary_run = run_pipeline(cfg, wd, only=["prepare"], show_progress=False)
    assert summary_run[0]["status"] == "skipped"


def test_second_run_fetches_nothing_new(tmp_path, server):
    httpd, base = server
    _, wd = _prepared(tmp_path, base)
    fetch_images(wd, **OPTIONS)
    ok_hits = {r: httpd.hits[r] for r in ("/a.jpg", "/b.png", "/flaky.png")}
    summary, failures = fetch_images(wd, **OPTIONS)
    assert summary.n_fetched == 0 and summary.n_present == 5
    assert {r: httpd.hits[r] for r in ok_hits} == ok_hits  # never refetched
    assert httpd.hits["/missing.jpg"] == 2  # failures are tried again
    # a damaged or deleted file is fetched again, and only that one
    (wd.dataset_dir / "images" / "SKU0.jpg").write_bytes(JPEG[:100])
    (wd.dataset_dir / "images" / "SKU1.png").unlink()
    summary, _ = fetch_images(wd, **OPTIONS)
    assert summary.n_fetched == 2
    assert httpd.hits["/a.jpg"] == ok_hits["/a.jpg"] + 1
    assert httpd.hits["/flaky.png"] == ok_hits["/flaky.png"]


def test_found_files_are_linked_without_downloading(tmp_path, server):
    """A crash after downloads but before items.parquet was updated loses nothing."""
    httpd, base = server
    cfg, wd = _prepared(tmp_path, base)
    (wd.dataset_dir / "images").mkdir(parents=True)
    (wd.dataset_dir / "images" / "SKU0.jpg").write_bytes(JPEG)
    summary, _ = fetch_images(wd, **OPTIONS)
    assert summary.n_found == 1 and httpd.hits["/a.jpg"] == 1  # only item 10's copy


def test_prepared_again_keeps_the_downloads(tmp_path, server):
    httpd, base = server
    cfg, wd = _prepared(tmp_path, base)
    fetch_images(wd, **OPTIONS)
    run_pipeline(cfg, wd, only=["prepare"], force=["prepare"], show_progress=False)
    items = Dataset.load(wd, features=False).items
    assert (items["image_path"] != "").sum() == 5


def test_cli_summary_and_dataset_json(tmp_path, server):
    _, base = server
    _, wd = _prepared(tmp_path, base)
    result = CliRunner().invoke(app, ["fetch-images", "--workdir", str(wd.root), "--timeout",
                                      "0.5", "--retries", "0", "--max-bytes", "100000",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    # no retries: the flaky image fails this time
    assert "4 of 12 items have an image" in result.output and "fetch_errors.csv" in result.output
    assert "item 2: HTTP 404" in result.output
    info = CliRunner().invoke(app, ["info", "--workdir", str(wd.root)])
    assert info.exit_code == 0, info.output
    assert "image fetch: 4 of 12 items have an image" in info.output


def test_dataset_without_urls_is_refused(tmp_path):
    wd = Workdir(tmp_path / "run")
    generate_synthetic(wd.dataset_dir, n_items=20, n_users=10, image_size=32,
                       show_progress=False).save(wd)
    with pytest.raises(DataError, match="no image_url column"):
        fetch_images(wd, **OPTIONS)
