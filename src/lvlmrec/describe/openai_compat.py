"""The `openai` backend: any OpenAI-compatible chat completions server.

vLLM (`vllm serve`), SGLang, Ollama, LM Studio, llama.cpp's server and TGI all speak
`POST {base_url}/chat/completions` with images as base64 `data:` URLs, so one client
covers them. Requests for a batch run concurrently (bounded by `concurrency`); 429, 5xx,
timeouts and dropped connections are retried with exponential backoff (honouring
`Retry-After`), and an item that still fails comes back as its error, which the describe
loop records and retries on the next run. The run itself never stops for one item.

The API key is read from the environment variable named by `api_key_env` (default
`OPENAI_API_KEY`) and never written anywhere; local servers need none. `base_url` is not
part of the cache key: the same model behind another address gives the same descriptions.
"""

from __future__ import annotations

import base64
import io
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from PIL import Image

from lvlmrec.describe.base import PromptedDescriber
from lvlmrec.describe.prompts import Prompt
from lvlmrec.errors import ConfigError

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class ServerError(RuntimeError):
    """A request that failed for good (after retries, or with a non-retryable status)."""


class OpenAIDescriber(PromptedDescriber):
    """Describes images through `/chat/completions`; one request per item."""

    backend = "openai"

    def __init__(
        self,
        prompt: Prompt,
        model: str,
        max_new_tokens: int = 150,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        base_url: str = "http://localhost:8000/v1",
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        image_format: str = "jpeg",
        max_image_side: int | None = None,
        extra_body: dict[str, Any] | None = None,
    ):
        super().__init__(model, prompt, max_new_tokens, temperature, top_p, seed)
        if image_format not in ("jpeg", "png"):
            raise ConfigError(f"describe.options.image_format: {image_format!r}; use jpeg or png")
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ConfigError("describe.options: concurrency >= 1, max_retries >= 0 and "
                              "timeout > 0 are required")
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.image_format = image_format
        self.max_image_side = max_image_side
        self.extra_body = dict(extra_body or {})
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.n_requests = 0  # every HTTP attempt, retries included

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "image_format": self.image_format,
                "max_image_side": self.max_image_side, "extra_body": self.extra_body}

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def load(self) -> None:
        if self._client is not None:
            return
        headers = {}
        if key := os.environ.get(self.api_key_env):
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            headers=headers, timeout=httpx.Timeout(self.timeout),
            limits=httpx.Limits(max_connections=self.concurrency,
                                max_keepalive_connections=self.concurrency))
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency,
                                        thread_name_prefix="lvlmrec-openai")
        self._check_reachable()

    def _check_reachable(self) -> None:
        """Stop before the first item when nothing answers at `base_url` (a typo, a server
        not started), instead of failing every item alike after its retries. Any HTTP
        answer, even an error status, means a server is there."""
        try:
            self._client.get(f"{self.base_url}/models", timeout=min(self.timeout, 10.0))
        except httpx.TransportError as err:
            self.close()
            raise ConfigError(f"describe.options.base_url: no server answers at "
                              f"{self.base_url} ({type(err).__name__}: {err}); is it "
                              "running?") from None

    def close(self) -> None:
        if self._pool is not None:  # after Ctrl-C: drop queued requests, do not wait
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()
        self._client = self._pool = None

    # ------------------------------------------------------------------ requests
    def data_url(self, image: Image.Image) -> str:
        img = image
        if self.max_image_side and max(img.size) > self.max_image_side:
            img = img.copy()
            img.thumbnail((self.max_image_side, self.max_image_side), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        if self.image_format == "jpeg":
            img.convert("RGB").save(buf, format="JPEG", quality=95)
        else:
            img.save(buf, format="PNG")
        b64 = base64.b64encode(buf.getvalue()).decode("ascii")
        return f"data:image/{self.image_format};base64,{b64}"

    def request_body(self, image: Image.Image, prompt: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": self.data_url(image)}},
                {"type": "text", "text": prompt},
            ]}],
            "max_tokens": self.max_new_tokens,
            "temperature": self.temperature,
        }
        if not self.greedy:
            body.update(top_p=self.top_p, seed=self.seed)
        return {**body, **self.extra_body}

    def describe(self, images: list[Image.Image], titles: list[str]) -> list[str | Exception]:
        self.load()
        prompts = self.prompt.texts(titles)
        return list(self._pool.map(self._describe_one, images, prompts))

    def _describe_one(self, image: Image.Image, prompt: str) -> str | Exception:
        try:
            return self.clean([self._complete(self.request_body(image, prompt))], [prompt])[0]
        except Exception as err:  # noqa: BLE001 - one item's failure is its result
            return err

    def _complete(self, body: dict[str, Any]) -> str:
        """POST with retries; the answer's text."""
        last, last_response = "", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._delay(attempt, last_response))
                last_response = None
            with self._lock:
                self.n_requests += 1
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TimeoutException as err:
                last = f"timed out after {self.timeout:g}s ({type(err).__name__})"
                continue
            except httpx.TransportError as err:
                last = f"{type(err).__name__}: {err}"
                continue
            if response.status_code == 200:
                return _answer(response)
            last = f"HTTP {response.status_code}: {response.text[:300]}"
            if response.status_code not in RETRY_STATUS:
                raise ServerError(f"{self.url} refused the request: {last}")
            last_response = response
        raise ServerError(f"{self.url} failed {self.max_retries + 1} times; last: {last}")

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        """Exponential backoff with jitter, or the server's Retry-After when it sent one."""
        if response is not None:
            try:
                return min(float(response.headers["retry-after"]), self.max_backoff)
            except (KeyError, ValueError):
                pass
        delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
        return delay * (1 + 0.25 * random.random())


def _answer(response: httpx.Response) -> str:
    try:
        message = response.json()["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ServerError(f"unexpected response: {response.text[:300]}") from None
    content = message.get("content")
    if isinstance(content, list):  # some servers return content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise ServerError(f"response has no text content: {response.text[:300]}")
    return content
