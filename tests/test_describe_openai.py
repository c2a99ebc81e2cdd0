"""The openai backend against a local OpenAI-compatible server on 127.0.0.1."""

import base64
import io
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from lvlmrec.config import DescribeConfig
from lvlmrec.describe.base import DescribeItem, describe_items
from lvlmrec.describe.openai_compat import OpenAIDescriber
from lvlmrec.describe.registry import make_describer
from lvlmrec.describe.store import DescriptionStore
from lvlmrec.errors import ConfigError


class Server:
    """Answers by the first path segment: ok, flaky (500 once per image), down (always 500),
    slow (answers after 1 s), refuse (400), busy (429 with Retry-After once)."""

    def __init__(self):
        self.requests: list[tuple[str, dict, dict]] = []
        self.seen: Counter = Counter()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                mode, _, rest = self.path.strip("/").partition("/")
                prompt = body["messages"][0]["content"][1]["text"]
                image = body["messages"][0]["content"][0]["image_url"]["url"]
                with server.lock:
                    server.requests.append((mode, dict(self.headers), body))
                    server.seen[(mode, image)] += 1
                    n = server.seen[(mode, image)]
                if rest != "v1/chat/completions":
                    return self._send(404, {"error": "no such route"})
                if mode == "down" or (mode == "flaky" and n == 1):
                    return self._send(500, {"error": "internal"})
                if mode == "busy" and n == 1:
                    return self._send(429, {"error": "slow down"}, {"Retry-After": "0.2"})
                if mode == "refuse":
                    return self._send(400, {"error": "bad image"})
                if mode == "slow":
                    time.sleep(1.0)
                size = Image.open(io.BytesIO(base64.b64decode(image.split(",", 1)[1]))).size
                answer = f" ASSISTANT: {prompt} It is {size[0]}x{size[1]}.\n"
                self._send(200, {"choices": [{"message": {"role": "assistant",
                                                           "content": answer}}]})

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left (the slow route)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.close()


def _describer(server, mode, **options):
    opts = {"base_url": f"{server.url}/{mode}/v1", "backoff": 0.01, "max_retries": 2,
            "concurrency": 4, **options}
    return make_describer(DescribeConfig(backend="openai", model="llava-next-7b",
                                         max_new_tokens=40, options=opts))


def _images(n):
    return [Image.new("RGB", (20 + i, 30), (10 * i, 100, 200)) for i in range(n)]


def test_describes_with_images_as_data_urls(server):
    d = _describer(server, "ok")
    try:
        texts = d.describe(_images(3), ["a", "b", "c"])
    finally:
        d.close()
    prompt = "Describe this product image in detail"
    assert not any(prompt in t or "ASSISTANT" in t for t in texts)  # echo removed
    assert texts == ["It is 20x30.", "It is 21x30.", "It is 22x30."]
    mode, headers, body = [r for r in server.requests if r[0] == "ok"][0]
    assert body["model"] == "llava-next-7b" and body["max_tokens"] == 40
    assert body["temperature"] == 0 and "seed" not in body
    part = body["messages"][0]["content"][0]
    assert part["type"] == "image_url"
    assert part["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_api_key_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-test")
    d = _describer(server, "ok", api_key_env="MY_KEY")
    d.describe(_images(1), ["x"])
    d.close()
    assert server.requests[-1][1].get("Authorization") == "Bearer sk-test"
    assert "sk-test" not in str(d.settings())  # never part of what is stored


def test_server_errors_are_retried_then_succeed(server):
    d = _describer(server, "flaky")
    texts = d.describe(_images(4), ["1", "2", "3", "4"])
    d.close()
    assert all(isinstance(t, str) and t.startswith("It is") for t in texts)
    assert d.n_requests == 8  # each item: one 500, one success


def test_retry_after_is_honoured(server):
    d = _describer(server, "busy")
    t0 = time.perf_counter()
    texts = d.describe(_images(1), ["busy"])
    d.close()
    assert texts == ["It is 20x30."] and time.perf_counter() - t0 >= 0.2


def test_failures_are_recorded_per_item_and_the_run_goes_on(server, tmp_path):
    paths = []
    for i, img in enumerate(_images(5)):
        paths.append(tmp_path / f"{i}.png")
        img.save(paths[-1])
    items = [DescribeItem(i, p, str(i)) for i, p in enumerate(paths)]
    down = _describer(server, "down")
    with DescriptionStore(tmp_path / "d.sqlite") as store:
        s = describe_items(down, store, items, batch_size=2, show_progress=False)
        errors = store.errors(down.model_id, down.prompt_hash)
        down.close()
        assert s.n_failed == 5 and sorted(errors) == list(range(5))
        assert "failed 3 times" in errors[0] and "HTTP 500" in errors[0]
        assert down.n_requests == 15
        # the server comes back: the next run retries exactly the failed items
        up = _describer(server, "ok")
        up.base_url = down.base_url.replace("/down/", "/ok/")
        assert up.prompt_hash == down.prompt_hash  # the address is not part of the key
        s = describe_items(up, store, items, batch_size=2, show_progress=False)
        up.close()
        assert s.n_described == 5 and not store.errors(up.model_id, up.prompt_hash)


def test_slow_server_times_out_is_retried_and_recorded(server):
    d = _describer(server, "slow", timeout=0.2, max_retries=1)
    t0 = time.perf_counter()
    out = d.describe(_images(2), ["x", "y"])
    d.close()
    assert all(isinstance(e, Exception) and "timed out after 0.2s" in str(e) for e in out)
    assert "failed 2 times" in str(out[0])
    assert d.n_requests == 4 and time.perf_counter() - t0 < 1.5  # in parallel, not 4 x 1 s


def test_client_errors_are_not_retried(server):
    d = _describer(server, "refuse")
    out = d.describe(_images(1), ["no"])
    d.close()
    assert "HTTP 400" in str(out[0]) and "bad image" in str(out[0]) and d.n_requests == 1


def test_unreachable_server_stops_before_the_first_item():
    d = OpenAIDescriber(prompt=_describer_prompt(), model="m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ConfigError, match="no server answers at http://127.0.0.1:9/v1"):
        d.describe(_images(1), ["x"])


def test_server_lost_mid_run_is_an_item_error(server):
    d = _describer(server, "ok", max_retries=1)
    d.load()
    d.base_url = "http://127.0.0.1:9/v1"  # the server goes away after the run started
    out = d.describe(_images(1), ["x"])
    d.close()
    assert isinstance(out[0], Exception) and "ConnectError" in str(out[0])


def _describer_prompt():
    from lvlmrec.describe.prompts import resolve_prompt

    return resolve_prompt("study_readme", False)


def test_options_and_model_are_checked():
    with pytest.raises(ConfigError, match="needs the model name"):
        make_describer(DescribeConfig(backend="openai"))
    with pytest.raises(ConfigError, match="'base_ur' is not an option"):
        make_describer(DescribeConfig(backend="openai", model="m", options={"base_ur": "x"}))
    with pytest.raises(ConfigError, match="image_format"):
        make_describer(DescribeConfig(backend="openai", model="m",
                                      options={"image_format": "gif"}))


def test_request_body_for_sampling_and_resizing():
    d = OpenAIDescriber(prompt=_describer_prompt(), model="m", temperature=0.7, top_p=0.9,
                        seed=5, max_image_side=16, extra_body={"top_k": 20})
    body = d.request_body(Image.new("RGB", (64, 32)), "hello")
    assert (body["temperature"], body["top_p"], body["seed"], body["top_k"]) == (0.7, 0.9, 5, 20)
    url = body["messages"][0]["content"][0]["image_url"]["url"]
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",")[1]))).size == (16, 8)
    assert body["messages"][0]["content"][1] == {"type": "text", "text": "hello"}


def test_two_describers_in_one_run_against_the_server(server, tmp_path):
    from typer.testing import CliRunner

    from lvlmrec.cli import app
    from lvlmrec.config import parse_config
    from lvlmrec.data.schema import Dataset
    from lvlmrec.describe.run import run_describers
    from lvlmrec.encode.run import text_inputs
    from lvlmrec.workdir import Workdir

    wd = tmp_path / "run"
    result = CliRunner().invoke(app, ["prepare", "-w", str(wd), "--format", "synthetic",
                                      "--n-items", "20", "--n-users", "10", "--image-size",
                                      "32", "--no-progress"])
    assert result.exit_code == 0, result.output
    workdir, n_before = Workdir(wd), len(server.requests)
    ds = Dataset.load(workdir, features=False)
    options = {"base_url": f"{server.url}/ok/v1", "backoff": 0.01, "concurrency": 4}
    cfg = parse_config({"describe": {
        "backend": "openai", "model": "llava-next-7b", "options": options, "batch_size": 8,
        "describers": {"readme": {},
                       "json": {"model": "qwen2-vl-7b", "prompt": "structured"}}}}).describe
    records = run_describers(cfg, workdir, ds, show_progress=False)
    assert [(r["status"], r["n_texts"]) for r in records.values()] == [("ok", 20), ("ok", 20)]
    sent = server.requests[n_before:]
    assert Counter(body["model"] for _, _, body in sent) == {"llava-next-7b": 20,
                                                            "qwen2-vl-7b": 20}
    sources = text_inputs(workdir, ds)
    assert sources["description"] == sources["description:readme"]
    prompts = {body["model"]: body["messages"][0]["content"][1]["text"] for _, _, body in sent}
    assert "as a JSON object" in prompts["qwen2-vl-7b"]
    assert prompts["llava-next-7b"].startswith("Describe this product image in detail")
    assert sources["description:json"][0] == "It is 32x32."  # the echo is cleaned off
    assert "attributes:json" in sources  # the fake answers prose: no fields found
    assert set(sources["attributes:json"]) == {""}
    # a second run sends nothing
    run_describers(cfg, workdir, ds, show_progress=False)
    assert len(server.requests) == n_before + 40
