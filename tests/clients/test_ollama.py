"""OllamaClient against a fake Ollama that speaks /api/generate and /api/tags."""

from __future__ import annotations

import time

import pytest

from listener.config import Settings
from listener.build.ollama import Generation, OllamaClient
from listener.queue.outcome import StepFailure
from tests.fakes.http_fake import Reply, closed_port_url
from tests.fakes.ollama_server import FakeOllama

MODEL = "llama3.1:8b"


def client(url: str, **overrides: object) -> OllamaClient:
    options: dict[str, object] = {"timeout_s": 5.0, "num_ctx": 4096, "temperature": 0.2, "seed": None}
    options.update(overrides)
    return OllamaClient(url, MODEL, **options)  # type: ignore[arg-type]


def failure_of(ollama: OllamaClient, prompt: str = "write a script") -> StepFailure:
    with pytest.raises(StepFailure) as caught:
        ollama.generate(prompt)
    failure = caught.value
    assert failure.level == 0
    assert failure.step == "generate"
    return failure


def test_generate_sends_the_request_ollama_expects_and_returns_the_text(fake_ollama: FakeOllama) -> None:
    fake_ollama.response_text = "import sys\nprint('ok')\n"
    generation = client(fake_ollama.url).generate("build me a script")

    assert isinstance(generation, Generation)
    assert generation.text == "import sys\nprint('ok')\n"
    assert generation.prompt_eval_count == 4
    assert generation.eval_count == 3
    assert generation.done_reason == "stop"
    assert 0 <= generation.duration_s < 5
    [request] = fake_ollama.requests_to("POST", "/api/generate")
    assert request.json == {
        "model": MODEL,
        "prompt": "build me a script",
        "stream": False,
        "options": {"temperature": 0.2, "num_ctx": 4096},
    }


def test_seed_and_structured_format_are_sent_when_given(fake_ollama: FakeOllama) -> None:
    schema = {"type": "object", "properties": {"checks": {"type": "array"}}, "required": ["checks"]}
    fake_ollama.response_text = '{"checks": []}'
    client(fake_ollama.url, seed=42).generate("checks please", fmt=schema)

    [request] = fake_ollama.requests_to("POST", "/api/generate")
    assert request.json["options"]["seed"] == 42
    assert request.json["format"] == schema


def test_from_settings_uses_the_ollama_settings(fake_ollama: FakeOllama) -> None:
    settings = Settings.from_env(
        {
            "OLLAMA_URL": fake_ollama.url,
            "OLLAMA_MODEL": MODEL,
            "OLLAMA_TIMEOUT_S": "7",
            "OLLAMA_NUM_CTX": "2048",
            "OLLAMA_TEMPERATURE": "0.5",
            "OLLAMA_SEED": "9",
        }
    )
    ollama = OllamaClient.from_settings(settings)
    ollama.generate("hello")

    assert ollama.timeout_s == 7
    [request] = fake_ollama.requests_to("POST", "/api/generate")
    assert request.json["options"] == {"temperature": 0.5, "num_ctx": 2048, "seed": 9}


def test_connection_refused_names_the_url_and_asks_whether_ollama_runs() -> None:
    url = closed_port_url()
    failure = failure_of(client(url))

    assert url in failure.message
    assert "is Ollama running?" in failure.message


def test_a_slow_model_times_out_at_the_deadline(fake_ollama: FakeOllama) -> None:
    fake_ollama.delay_s = 4
    started = time.monotonic()
    failure = failure_of(client(fake_ollama.url, timeout_s=0.5))

    assert time.monotonic() - started < 2.5
    assert "did not answer within 0.5 s" in failure.message


def test_the_deadline_covers_the_whole_call_not_each_read(fake_ollama: FakeOllama) -> None:
    # every byte arrives well within any per-read timeout, but the whole answer takes ~6 s
    body = '{"response": "' + "x" * 100 + '", "done": true}'
    fake_ollama.script("POST", "/api/generate", Reply(200, body, headers={"Content-Type": "application/json"}, trickle_s=0.05))
    started = time.monotonic()
    failure = failure_of(client(fake_ollama.url, timeout_s=1.0))

    assert time.monotonic() - started < 3
    assert "did not answer within 1 s" in failure.message


def test_a_missing_model_says_to_pull_it() -> None:
    with FakeOllama(models=("mistral:7b",)) as fake:
        failure = failure_of(client(fake.url))

    assert f"ollama pull {MODEL}" in failure.message
    assert "not found" in failure.message


def test_a_server_error_reports_status_and_body(fake_ollama: FakeOllama) -> None:
    fake_ollama.script("POST", "/api/generate", Reply(500, {"error": "llama runner process has terminated: signal: killed"}))
    failure = failure_of(client(fake_ollama.url))

    assert "HTTP 500" in failure.message
    assert "llama runner process has terminated" in failure.message


def test_a_long_error_body_is_cut_to_an_excerpt(fake_ollama: FakeOllama) -> None:
    fake_ollama.script("POST", "/api/generate", Reply(503, "busy " * 1000))
    failure = failure_of(client(fake_ollama.url))

    assert "HTTP 503" in failure.message
    assert len(failure.message) < 500


def test_a_context_error_from_ollama_means_the_spec_is_too_large(fake_ollama: FakeOllama) -> None:
    fake_ollama.script("POST", "/api/generate", Reply(400, {"error": "the input length exceeds the context length"}))
    failure = failure_of(client(fake_ollama.url))

    assert "too large for OLLAMA_NUM_CTX=4096" in failure.message
    assert failure.kind == "invalid"


def test_a_body_that_is_not_json_is_reported(fake_ollama: FakeOllama) -> None:
    fake_ollama.script("POST", "/api/generate", Reply(200, "<html>proxy error</html>"))
    failure = failure_of(client(fake_ollama.url))

    assert "not JSON" in failure.message
    assert "proxy error" in failure.message


def test_json_without_a_response_field_is_reported(fake_ollama: FakeOllama) -> None:
    fake_ollama.script("POST", "/api/generate", Reply(200, {"model": MODEL, "done": True}))
    failure = failure_of(client(fake_ollama.url))

    assert 'no "response"' in failure.message


def test_an_error_field_in_a_200_answer_is_reported(fake_ollama: FakeOllama) -> None:
    fake_ollama.script("POST", "/api/generate", Reply(200, {"error": "unexpected EOF"}))
    failure = failure_of(client(fake_ollama.url))

    assert "unexpected EOF" in failure.message


def test_an_empty_response_fails(fake_ollama: FakeOllama) -> None:
    fake_ollama.response_text = "  \n"
    failure = failure_of(client(fake_ollama.url))

    assert "empty response" in failure.message


def test_output_cut_at_the_length_limit_fails(fake_ollama: FakeOllama) -> None:
    fake_ollama.done_reason = "length"
    failure = failure_of(client(fake_ollama.url))

    assert "done_reason=length" in failure.message
    assert "incomplete" in failure.message


def test_a_prompt_truncated_to_the_context_fails_as_too_large(fake_ollama: FakeOllama) -> None:
    ollama = client(fake_ollama.url, num_ctx=512)
    assert ollama.generate("word " * 400).prompt_eval_count == 400  # fits: no failure

    failure = failure_of(ollama, "word " * 600)  # the fake truncates it to 512 tokens, as Ollama does
    assert "too large for OLLAMA_NUM_CTX=512" in failure.message
    assert failure.kind == "invalid"


def test_list_models_returns_the_pulled_models() -> None:
    with FakeOllama(models=("llama3.1:8b", "qwen2.5-coder:7b")) as fake:
        assert client(fake.url).list_models() == ["llama3.1:8b", "qwen2.5-coder:7b"]


def test_list_models_fails_clearly_when_ollama_is_down() -> None:
    url = closed_port_url()
    with pytest.raises(StepFailure) as caught:
        client(url).list_models()
    assert "is Ollama running?" in caught.value.message
