"""The Ollama client for Step 3: one non-streaming /api/generate call under one deadline.

Every way the call can go wrong becomes a StepFailure(level=0, step='generate') whose message
says what happened and, when known, what to do about it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Coroutine, TypeVar

import httpx
from loguru import logger

from listener.config import Settings
from listener.queue.outcome import StepFailure

EXCERPT_CHARS = 300
CONTEXT_ERROR = re.compile(r"context|too long|exceed", re.IGNORECASE)
T = TypeVar("T")


@dataclass(frozen=True)
class Generation:
    """What the model produced, with Ollama's token counts when it reports them."""

    text: str
    prompt_eval_count: int | None
    eval_count: int | None
    done_reason: str | None
    duration_s: float


PROBE_TIMEOUT_S = 10.0  # the free readiness look (GET /api/tags) waits at most this long


class OllamaClient:
    def __init__(
        self,
        url: str,
        model: str,
        *,
        timeout_s: float = 120.0,
        num_ctx: int = 8192,
        temperature: float = 0.2,
        seed: int | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.num_ctx = num_ctx
        self.temperature = temperature
        self.seed = seed

    @classmethod
    def from_settings(cls, settings: Settings) -> "OllamaClient":
        return cls(
            settings.ollama_url,
            settings.ollama_model,
            timeout_s=settings.ollama_timeout_s,
            num_ctx=settings.ollama_num_ctx,
            temperature=settings.ollama_temperature,
            seed=settings.ollama_seed,
        )

    def request_body(self, prompt: str, fmt: dict[str, Any] | str | None = None) -> dict[str, Any]:
        options: dict[str, Any] = {"temperature": self.temperature, "num_ctx": self.num_ctx}
        if self.seed is not None:
            options["seed"] = self.seed
        body: dict[str, Any] = {"model": self.model, "prompt": prompt, "stream": False, "options": options}
        if fmt is not None:
            body["format"] = fmt
        return body

    def generate(self, prompt: str, *, fmt: dict[str, Any] | str | None = None) -> Generation:
        """One generation; OLLAMA_TIMEOUT_S bounds the whole call. Raises StepFailure."""
        started = time.monotonic()
        logger.info("ollama generate start model={} prompt_chars={} num_ctx={}", self.model, len(prompt), self.num_ctx)
        try:
            response = self._post("/api/generate", self.request_body(prompt, fmt))
            generation = self._generation(response, time.monotonic() - started)
        except StepFailure as failure:
            logger.warning("ollama generate failed after {:.1f}s: {}", time.monotonic() - started, failure.message)
            raise
        logger.info(
            "ollama generate done in {:.1f}s chars={} prompt_eval_count={} eval_count={} done_reason={}",
            generation.duration_s,
            len(generation.text),
            generation.prompt_eval_count,
            generation.eval_count,
            generation.done_reason,
        )
        return generation

    def list_models(self) -> list[str]:
        """Names of the models this Ollama has pulled (GET /api/tags). Raises StepFailure."""
        response = self._call("GET", "/api/tags", None, step="list_models")
        if response.status_code != 200:
            raise self._failure(f"Ollama /api/tags answered HTTP {response.status_code}: {_excerpt(response.text)}", "list_models")
        try:
            models = response.json()["models"]
            return [str(entry.get("name") or entry.get("model")) for entry in models]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise self._failure(f"Ollama /api/tags returned an unexpected body: {_excerpt(response.text)}", "list_models") from None

    def model_problem(self) -> tuple[str, str] | None:
        """None when this Ollama serves the model; else what is wrong and its fix, each one line
        (GET /api/tags: free, no generation). Shared by `check` and the build's check before Step 3."""
        probe = OllamaClient(self.url, self.model, timeout_s=min(self.timeout_s, PROBE_TIMEOUT_S))
        try:
            models = probe.list_models()
        except StepFailure as exc:
            return exc.message, f"start Ollama at OLLAMA_URL={self.url}"
        if self.model not in models and f"{self.model}:latest" not in models:
            return f"Ollama at {self.url} has no model {self.model}", f"run: ollama pull {self.model}"
        return None

    # -- internals ---------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        response = self._call("POST", path, body, step="generate")
        if response.status_code == 200:
            return response
        error = _error_text(response)
        if response.status_code == 404 and "not found" in error.lower():
            raise self._failure(
                f"model {self.model!r} is not available on Ollama at {self.url}: run `ollama pull {self.model}` "
                f"(Ollama said: {_excerpt(error)})"
            )
        if response.status_code in (400, 413, 500) and CONTEXT_ERROR.search(error):
            raise self._too_large(f"Ollama refused the prompt: HTTP {response.status_code}: {_excerpt(error)}")
        if response.status_code >= 500:
            raise self._failure(f"Ollama failed with HTTP {response.status_code}: {_excerpt(error)}")
        raise self._failure(f"Ollama rejected the request with HTTP {response.status_code}: {_excerpt(error)}")

    def _call(self, method: str, path: str, body: dict[str, Any] | None, *, step: str) -> httpx.Response:
        url = self.url + path
        try:
            return _run(self._request(method, url, body))
        except (asyncio.TimeoutError, httpx.TimeoutException):
            raise self._failure(
                f"Ollama at {self.url} did not answer within {self.timeout_s:g} s (OLLAMA_TIMEOUT_S)", step
            ) from None
        except httpx.ConnectError as exc:
            raise self._failure(f"cannot connect to Ollama at {self.url} ({exc or 'connection refused'}): is Ollama running?", step) from None
        except httpx.HTTPError as exc:
            raise self._failure(f"the connection to Ollama at {self.url} failed: {type(exc).__name__}: {exc}", step) from None

    async def _request(self, method: str, url: str, body: dict[str, Any] | None) -> httpx.Response:
        # the per-phase timeouts are a backstop; wait_for enforces the deadline on the whole call
        phases = httpx.Timeout(self.timeout_s)
        async with httpx.AsyncClient(timeout=phases) as client:
            return await asyncio.wait_for(client.request(method, url, json=body), timeout=self.timeout_s)

    def _generation(self, response: httpx.Response, duration_s: float) -> Generation:
        try:
            data = response.json()
        except ValueError:
            raise self._failure(f"Ollama's answer is not JSON: {_excerpt(response.text)}") from None
        if not isinstance(data, dict):
            raise self._failure(f"Ollama's answer is not a JSON object: {_excerpt(response.text)}")
        if "error" in data and "response" not in data:
            raise self._failure(f"Ollama reported an error: {_excerpt(str(data['error']))}")
        text = data.get("response")
        if not isinstance(text, str):
            raise self._failure(f'Ollama\'s answer has no "response" text: {_excerpt(response.text)}')
        if data.get("done") is False:
            raise self._failure("Ollama's answer is incomplete (done=false)")
        generation = Generation(
            text=text,
            prompt_eval_count=_int_or_none(data.get("prompt_eval_count")),
            eval_count=_int_or_none(data.get("eval_count")),
            done_reason=data.get("done_reason") if isinstance(data.get("done_reason"), str) else None,
            duration_s=duration_s,
        )
        if generation.prompt_eval_count is not None and generation.prompt_eval_count >= self.num_ctx:
            raise self._too_large(
                f"the prompt filled the whole context ({generation.prompt_eval_count} tokens evaluated, "
                f"OLLAMA_NUM_CTX={self.num_ctx}), so Ollama silently truncated it"
            )
        if generation.done_reason == "length":
            raise self._failure(
                f"the output was cut off at the length limit (done_reason=length after {generation.eval_count} "
                f"tokens, OLLAMA_NUM_CTX={self.num_ctx}): the generated code is incomplete"
            )
        if not text.strip():
            raise self._failure(f"Ollama returned an empty response (done_reason={generation.done_reason})")
        return generation

    def _too_large(self, what: str) -> StepFailure:
        return StepFailure(
            level=0,
            step="generate",
            message=f"the spec is too large for OLLAMA_NUM_CTX={self.num_ctx}: {what}; "
            "shorten task_description or raise OLLAMA_NUM_CTX",
            kind="invalid",
        )

    @staticmethod
    def _failure(message: str, step: str = "generate") -> StepFailure:
        return StepFailure(level=0, step=step, message=message)


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, also when this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _error_text(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text
    if isinstance(data, dict) and "error" in data:
        return str(data["error"])
    return json.dumps(data)


def _excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    flat = " ".join(text.split())
    if not flat:
        return "(empty body)"
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
