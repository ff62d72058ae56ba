"""Requests that used to pin or crash the server: too many prompts or too much work (400
naming the limit), lone surrogates in text that is echoed back (replaced, never a 500),
absurdly long questions, and SIGTERM (exit 0 with serve's own message, idle or during a long request)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from serve_checks import assert_error

from pure_transformer.serving.schemas import clean_text


def _post_raw(client: httpx.Client, path: str, body: dict) -> httpx.Response:
    # json.dumps escapes a lone surrogate as \ud800, which is valid JSON; httpx's own encoder would refuse it.
    return client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


@pytest.mark.fast
def test_too_many_prompts_or_too_much_work_is_400_naming_the_limit(client: httpx.Client) -> None:
    err = assert_error(client.post("/v1/completions", json={"prompt": ["a b"] * 5000, "max_tokens": 1}), 400)
    assert err["param"] == "prompt" and "5000 prompts in one request, over the server limit of 256" in err["message"]
    err = assert_error(client.post("/v1/completions", json={"prompt": ["a"] * 256, "n": 16, "max_tokens": 200}), 400)
    assert "tokens of work" in err["message"] and "over the server limit of 262,144" in err["message"]
    # What lm-eval sends (a batch of scoring prompts, one token each) stays well inside.
    ok = client.post("/v1/completions", json={"prompt": ["Question: x\nAnswer:"] * 64, "max_tokens": 1,
                                              "temperature": 0, "echo": True, "logprobs": 1})
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 64


@pytest.mark.parametrize("body", [
    {"prompt": "\ud800", "echo": True, "max_tokens": 1},
    {"prompt": ["\ud800", "b\udfffc"], "echo": True, "max_tokens": 1},
    {"prompt": "a\ud800", "echo": True, "max_tokens": 1, "logprobs": 2},
    {"prompt": "a", "stop": ["\ud800"], "max_tokens": 2},
])
@pytest.mark.fast
def test_lone_surrogates_are_replaced_not_a_500(client: httpx.Client, body: dict) -> None:
    response = _post_raw(client, "/v1/completions", body)
    assert response.status_code == 200, response.text
    if body.get("echo"):
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        for choice, prompt in zip(response.json()["choices"], prompts):
            assert choice["text"].startswith(clean_text(prompt)) and "\ufffd" in choice["text"]


@pytest.mark.fast
def test_surrogates_in_chat_and_mcq(client: httpx.Client) -> None:
    chat = _post_raw(client, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi \ud800"}],
                                                      "max_tokens": 2})
    assert chat.status_code == 200, chat.text
    mcq = _post_raw(client, "/v1/mcq", {"question": "Which \ud800?", "options": {"A": "x\udc00", "B": "y"}})
    assert mcq.status_code == 200 and set(mcq.json()["probabilities"]) == {"A", "B"}


@pytest.mark.fast
def test_an_absurdly_long_question_is_answered_not_a_500(client: httpx.Client) -> None:
    response = client.post("/v1/mcq", json={"question": "why " * 10_000, "options": {"A": "x", "B": "y"}})
    assert response.status_code == 200, response.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_model, tiny_tokenizer) -> Path:
    from pure_transformer.checkpoint.store import save_checkpoint, step_dir

    return save_checkpoint(step_dir(tmp_path_factory.mktemp("run"), 1), tiny_model,
                           {"kind": "pretrain", "step": 1, "model_config": tiny_model.cfg.to_dict(),
                            "tokenizer": "tokenizer.json"}, files={"tokenizer.json": tiny_tokenizer.hf.to_str()})


def _start_server(checkpoint: Path) -> tuple[subprocess.Popen, str]:
    """``serve`` in a subprocess (1 s grace period), once /health answers."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pure_transformer.serve", "--checkpoint", str(checkpoint), "--port",
                             str(port), "--shutdown-timeout", "1"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    return proc, base


def _stopped_cleanly(proc: subprocess.Popen, message: str) -> float:
    """SIGTERM ``proc``; it must exit 0 with ``message`` of its own, never the CLI's set-up handler's
    "terminated (SIGTERM) before the command's own shutdown began" and 143. Returns the seconds it took."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    took = time.monotonic() - sent
    assert proc.returncode == 0 and message in err and "terminated (SIGTERM)" not in err, (proc.returncode, err[-2000:])
    return took


def test_sigterm_on_an_idle_server_exits_0_with_its_own_message(checkpoint: Path) -> None:
    proc, _ = _start_server(checkpoint)
    try:
        _stopped_cleanly(proc, "serve: stopped on SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_stops_the_server_within_its_grace_period_during_a_long_request(checkpoint: Path) -> None:
    proc, base = _start_server(checkpoint)
    try:
        long = {"prompt": ["The patient"] * 64, "n": 16, "max_tokens": 240, "temperature": 1.0}
        outcome: dict = {}

        def send() -> None:
            try:
                outcome["status"] = httpx.post(f"{base}/v1/completions", json=long, timeout=120).status_code
            except httpx.HTTPError as e:
                outcome["error"] = type(e).__name__

        client = threading.Thread(target=send)
        client.start()
        time.sleep(1.5)  # the request is on the model thread now (1,024 rows x 240 tokens take far longer)
        assert client.is_alive()
        # It must not wait for the request: the grace period (1 s) ends it.
        took = _stopped_cleanly(proc, "serve: stopped after 1 s with a request still running")
        client.join(timeout=10)
        assert took < 8, took
        assert outcome  # the client got an answer or a closed connection, not a hang
    finally:
        if proc.poll() is None:
            proc.kill()
