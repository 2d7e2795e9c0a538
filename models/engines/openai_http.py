"""HTTP to an OpenAI-compatible server: timeouts, retries of 429/503, server-sent events, errors that name base_url.

Every failure becomes one typed error: RemoteModelError when the server is down, slow or failing (the app
answers 503), ModelError when it refuses the request itself (400: a prompt over its context length). The
errors name the keys of the config section that chose the server: llm.* for the LM, embedder.* for embeddings.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from models.config import EmbedderConfig, LLMConfig
from models.errors import ConfigError, ModelError, RemoteModelError

log = logging.getLogger("ragtune.remote")
RETRIED = (429, 503)  # busy or starting up: worth another try; any other status is final
FIRST_BACKOFF_S = 0.5  # then 1 s, 2 s, ...; a Retry-After header, when sent, wins (up to MAX_BACKOFF_S)
MAX_BACKOFF_S = 30.0


class RemoteServer:
    """One OpenAI-compatible server: a pooled HTTP client (thread-safe) and the settings from `section`.*."""

    def __init__(self, config: LLMConfig | EmbedderConfig, section: str = "llm", retry_connect: bool = False) -> None:
        url = (config.base_url or "").rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{section}.base_url: {section}.backend=openai needs the server's address, such as "
                f"http://gpu-box:8000/v1, got {config.base_url!r}"
            )
        # retry_connect: a refused connection is retried like a 429 (a batch job outlives a server restart);
        # the LM fails at once instead, so that a question never waits on a server that is down.
        self.section, self.retry_connect = section, retry_connect
        self.label = f"{section}.base_url={config.base_url}"
        self.root = url.removesuffix("/v1")  # vLLM serves /tokenize beside /v1, not under it
        self.read_timeout, self.max_retries = config.read_timeout, config.max_retries
        key = read_key(config.api_key_file, f"{section}.api_key_file") if config.api_key_file else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        timeout = httpx.Timeout(config.read_timeout, connect=config.connect_timeout)
        self.client = httpx.Client(headers=headers, timeout=timeout)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON, return the JSON answer (retrying 429/503)."""
        with self.open("POST", path, body) as response:
            return self._json(response, path)

    def get(self, path: str) -> dict[str, Any]:
        with self.open("GET", path) as response:
            return self._json(response, path)

    def events(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST with `stream: true` and yield each server-sent event's JSON; closing this closes the response."""
        with self.open("POST", path, body) as response:
            try:
                for line in response.iter_lines():
                    data = line.removeprefix("data:").strip() if line.startswith("data:") else ""
                    if not data or data == "[DONE]":
                        continue
                    event = _parse(data, self.label)
                    if isinstance(event.get("error"), dict):  # after the headers, errors travel as events
                        raise ModelError(f"{self.label} failed mid-answer: {event['error'].get('message')}")
                    yield event
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, path) from None

    @contextmanager
    def open(self, method: str, path: str, body: dict[str, Any] | None = None) -> Iterator[httpx.Response]:
        """A response with a 2xx status, retried on 429/503 (and, with retry_connect, a refused connection) with
        exponential backoff; other statuses raise."""
        url = (self.root + path) if path.startswith("/tokenize") else f"{self.root}/v1{path}"
        for attempt in range(self.max_retries + 1):
            answered = False
            try:
                with self.client.stream(method, url, json=body) as response:
                    answered = True
                    if response.status_code < 400:
                        yield response
                        return
                    response.read()
                    if response.status_code not in RETRIED or attempt == self.max_retries:
                        raise self._status_error(response, method, path, attempt + 1)
                    wait = _backoff(response, attempt)
                    said = f"answered {response.status_code} to {path}"
            except httpx.HTTPError as exc:
                connect = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)) and not answered
                if not (connect and self.retry_connect and attempt < self.max_retries):
                    raise self._transport_error(exc, path) from None
                wait, said = min(FIRST_BACKOFF_S * 2**attempt, MAX_BACKOFF_S), f"could not be reached ({exc})"
            log.warning("%s %s; retrying in %.1f s", self.label, said, wait)
            time.sleep(wait)

    def _json(self, response: httpx.Response, path: str) -> dict[str, Any]:
        try:
            return _parse(response.read().decode("utf-8", "replace"), self.label)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, path) from None

    def _transport_error(self, exc: httpx.HTTPError, path: str) -> RemoteModelError:
        """Any failure of httpx itself (transport, timeout, a body it cannot decode or stream) as one typed error."""
        if isinstance(exc, httpx.ConnectTimeout):
            return RemoteModelError(
                f"cannot connect to {self.label} within {self.section}.connect_timeout; is the server up?"
            )
        if isinstance(exc, httpx.TimeoutException):
            return RemoteModelError(
                f"no answer from {self.label} to {path} within {self.section}.read_timeout={self.read_timeout:g} s: "
                f"the server is overloaded or stuck (raise {self.section}.read_timeout if long prompts need longer)"
            )
        if isinstance(exc, httpx.TransportError):
            return RemoteModelError(
                f"cannot reach {self.label} ({exc}): start the server or fix {self.section}.base_url"
            )
        return RemoteModelError(  # DecodingError, StreamError, ...: the server's answer could not be read
            f"cannot read the answer of {self.label} to {path} ({type(exc).__name__}: {exc}); check the server"
        )

    def _status_error(self, response: httpx.Response, method: str, path: str, attempts: int) -> ModelError:
        status, message = response.status_code, _server_message(response)
        said = f"{self.label} answered {status} to {method} {path}: {message}"
        if status in (401, 403):
            return RemoteModelError(f"{said}; check {self.section}.api_key_file")
        if status in RETRIED:
            return RemoteModelError(f"{said} (attempts: {attempts}); retry later or raise {self.section}.max_retries")
        if status >= 500:
            return RemoteModelError(said)
        return ModelError(said)

    def close(self) -> None:
        """Close the pooled connections; requests after this fail."""
        self.client.close()


def read_key(path: str | None, key: str = "llm.api_key_file") -> str:
    """The API key from the file `key` names (the key itself never appears in a config)."""
    file = Path(path or "").expanduser()
    try:
        key = file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {file} ({exc.strerror})") from None
    if not key:
        raise ConfigError(f"{key}: {file} is empty; put the server's API key in it")
    return key


def _backoff(response: httpx.Response, attempt: int) -> float:
    """Seconds before the next try: the server's Retry-After clamped to [0, MAX_BACKOFF_S] (time.sleep raises on a
    negative one), else doubling; an HTTP date, NaN or other text counts as no Retry-After."""
    try:
        asked = float(response.headers["retry-after"])
    except (KeyError, ValueError):
        asked = math.nan
    if math.isnan(asked):
        return min(FIRST_BACKOFF_S * 2**attempt, MAX_BACKOFF_S)
    return min(max(asked, 0.0), MAX_BACKOFF_S)


def _server_message(response: httpx.Response) -> str:
    """The server's own error message (OpenAI shape, or FastAPI's `detail`), else the start of its body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])[:200]
    return str(body)[:200]


def _parse(text: str, label: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise RemoteModelError(f"{label} sent something that is not JSON: {text[:80]!r}") from None
    if not isinstance(value, dict):
        raise RemoteModelError(f"{label} sent {type(value).__name__} where a JSON object was expected")
    return value
