"""A fake Ollama: POST /api/generate (non-streaming) and GET /api/tags, in Ollama's response shapes.

Behaviour a test can set:
  models         the pulled models; any other model gets Ollama's 404 "not found, try pulling it first"
  response_text  what the model "writes"
  done_reason    'stop' by default; 'length' imitates hitting num_predict / the context
  delay_s        sleep before answering (a slow model)
Prompt tokens are counted as whitespace-separated words; like Ollama, a prompt longer than
options.num_ctx is silently truncated, so prompt_eval_count is then num_ctx.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from tests.fakes.http_fake import FakeHTTPServer, RecordedRequest, Reply

DEFAULT_NUM_CTX = 2048


class FakeOllama(FakeHTTPServer):
    def __init__(
        self,
        models: tuple[str, ...] = ("llama3.1:8b",),
        response_text: str = "print('hello')\n",
        done_reason: str = "stop",
        delay_s: float = 0.0,
    ) -> None:
        super().__init__()
        self.models = models
        self.response_text = response_text
        self.done_reason = done_reason
        self.delay_s = delay_s
        self._queued_texts: list[str] = []

    def queue_texts(self, *texts: str) -> None:
        """Answers for the next generate calls, in order; then response_text again."""
        with self._lock:
            self._queued_texts.extend(texts)

    def _next_text(self) -> str:
        with self._lock:
            return self._queued_texts.pop(0) if self._queued_texts else self.response_text

    def respond(self, request: RecordedRequest) -> Reply:
        if request.method == "GET" and request.path == "/api/tags":
            return Reply(200, {"models": [self._model_entry(name) for name in self.models]})
        if request.method == "POST" and request.path == "/api/generate":
            return self._generate(request)
        return Reply(404, "404 page not found")

    def _generate(self, request: RecordedRequest) -> Reply:
        body = request.json
        if not isinstance(body, dict):
            return Reply(400, {"error": "invalid request body"})
        model = body.get("model")
        if model not in self.models:
            return Reply(404, {"error": f'model "{model}" not found, try pulling it first'})
        options: dict[str, Any] = body.get("options") or {}
        num_ctx = int(options.get("num_ctx") or DEFAULT_NUM_CTX)
        prompt_tokens = len(str(body.get("prompt", "")).split())
        started = time.monotonic()
        if self.delay_s:
            time.sleep(self.delay_s)
        text = self._next_text()
        payload = {
            "model": model,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "response": text,
            "done": True,
            "done_reason": self.done_reason,
            "context": [1, 2, 3],
            "total_duration": int((time.monotonic() - started) * 1e9),
            "load_duration": 1000,
            "prompt_eval_count": min(prompt_tokens, num_ctx),
            "prompt_eval_duration": 1000,
            "eval_count": len(text.split()),
            "eval_duration": 1000,
        }
        return Reply(200, payload)

    @staticmethod
    def _model_entry(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "model": name,
            "modified_at": "2024-08-01T00:00:00Z",
            "size": 4920753328,
            "digest": "0" * 64,
            "details": {"format": "gguf", "family": "llama", "parameter_size": "8.0B", "quantization_level": "Q4_0"},
        }
