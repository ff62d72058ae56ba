"""The HTTP server through a real socket: health, completions, chat, streaming, MCQ,
bad input, limits and the web page (fixtures in conftest.py)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serve_checks import MCQ_BODY, assert_error, sse_events

from pure_transformer.serving.app import create_app
from pure_transformer.serving.schemas import ChatMessage, ServerLimits, chat_prompt


# ------------------------------------------------------------------ basics
def test_health_models_and_page(client):
    assert client.get("/health").json()["status"] == "ok"
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "tiny"
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "Not medical advice" in page.text and "research demo" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no external assets


@pytest.mark.fast
def test_completion_shape_and_usage(client):
    r = client.post("/v1/completions", json={"prompt": "Question: fever and rash?", "max_tokens": 8,
                                             "temperature": 0, "seed": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == "tiny" and body["id"].startswith("cmpl-")
    assert isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0 and isinstance(choice["text"], str) and choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and 1 <= usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.fast
def test_completion_n_and_seed(client):
    req = {"prompt": "The heart", "max_tokens": 6, "temperature": 1.0, "n": 3, "seed": 7}
    a, b = client.post("/v1/completions", json=req).json(), client.post("/v1/completions", json=req).json()
    assert [c["index"] for c in a["choices"]] == [0, 1, 2]
    assert [c["text"] for c in a["choices"]] == [c["text"] for c in b["choices"]]  # seeded: reproducible


@pytest.mark.fast
def test_stop_string_cuts_text(client):
    # Greedy output first, then stop at a character it contains: the text must end before it.
    full = client.post("/v1/completions", json={"prompt": "A", "max_tokens": 30, "temperature": 0}).json()
    text = full["choices"][0]["text"]
    stop = next((ch for ch in text[1:] if ch.strip()), None)
    if stop is None:
        pytest.skip("random model produced only whitespace")
    cut = client.post("/v1/completions", json={"prompt": "A", "max_tokens": 30, "temperature": 0,
                                               "stop": [stop]}).json()["choices"][0]
    assert stop not in cut["text"] and text.startswith(cut["text"]) and cut["finish_reason"] == "stop"
    single = client.post("/v1/completions", json={"prompt": "A", "max_tokens": 30, "temperature": 0, "stop": stop})
    assert single.json()["choices"][0]["text"] == cut["text"]


@pytest.mark.fast
def test_chat_completion(client):
    r = client.post("/v1/chat/completions", json={
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is BP?"}],
        "max_tokens": 10, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    msg = body["choices"][0]["message"]
    assert msg["role"] == "assistant" and "\nUser:" not in msg["content"]
    assert body["usage"]["total_tokens"] > body["usage"]["prompt_tokens"]


@pytest.mark.fast
def test_chat_template():
    text = chat_prompt([ChatMessage(role="system", content="S"), ChatMessage(role="user", content="hi"),
                        ChatMessage(role="assistant", content="hello"), ChatMessage(role="user", content="bye")])
    assert text == "S\n\nUser: hi\nAssistant: hello\nUser: bye\nAssistant:"


# --------------------------------------------------------------- streaming
@pytest.mark.fast
def test_streaming_completion_matches_non_streaming(client):
    req = {"prompt": "Question: cough?", "max_tokens": 12, "temperature": 0}
    plain = client.post("/v1/completions", json=req).json()["choices"][0]
    with client.stream("POST", "/v1/completions", json={**req, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        chunks = sse_events(r)
    assert all(c["object"] == "text_completion" and c["choices"][0]["index"] == 0 for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == plain["text"]
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == plain["finish_reason"]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


@pytest.mark.fast
def test_streaming_chat_with_n(client):
    req = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8, "n": 2, "stream": True,
           "temperature": 0.9, "seed": 3}
    with client.stream("POST", "/v1/chat/completions", json=req) as r:
        assert r.status_code == 200
        chunks = sse_events(r)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    finished = {c["choices"][0]["index"]: c["choices"][0]["finish_reason"] for c in chunks
                if c["choices"][0]["finish_reason"] is not None}
    assert finished.keys() == {0, 1} and set(finished.values()) <= {"stop", "length"}
    assert all("content" in c["choices"][0]["delta"] or c["choices"][0]["finish_reason"] or
               c["choices"][0]["delta"].get("role") == "assistant" for c in chunks)


@pytest.mark.fast
def test_stream_disconnect_releases_slot(client, url):
    with httpx.Client(base_url=url, timeout=30) as other:
        with other.stream("POST", "/v1/completions", json={"prompt": "x", "max_tokens": 240, "stream": True,
                                                           "temperature": 1.0}) as r:
            next(r.iter_lines())  # one event arrives, then the client goes away mid-stream
    deadline = time.monotonic() + 10
    while client.get("/health").json()["active_requests"] != 0:
        assert time.monotonic() < deadline, "a disconnected stream kept its slot"
        time.sleep(0.05)


# --------------------------------------------------------------------- mcq
@pytest.mark.fast
def test_mcq_probabilities(client):
    r = client.post("/v1/mcq", json=MCQ_BODY)
    assert r.status_code == 200, r.text
    body = r.json()
    probs = body["probabilities"]
    assert list(probs) == ["A", "B", "C", "D"] and abs(sum(probs.values()) - 1) < 1e-5
    assert all(0 <= p <= 1 for p in probs.values())
    assert body["answer"] == max(probs, key=probs.get)


@pytest.mark.parametrize("options", [
    {"A": "1"},
    {k: str(i) for i, k in enumerate("ABCDEFGHIJK")},
    {"A": "1", "B": "2", "C": "3", "X": "4"},
    {"A": "1", "B": "2", "D": "4"},
    {"A": "1", "B": "2", "C": "3", "D": "  "},
])
@pytest.mark.fast
def test_mcq_bad_options(client, options):
    err = assert_error(client.post("/v1/mcq", json={"question": "q?", "options": options}), 400)
    assert err["param"] == "options"


@pytest.mark.fast
@pytest.mark.parametrize("count", [2, 3, 5, 10])
def test_mcq_any_option_count_with_a_context(client, count):
    options = {chr(65 + i): f"option {i}" for i in range(count)}
    response = client.post("/v1/mcq", json={"question": "Does it help?", "options": options,
                                            "context": "An abstract. " * 200})  # longer than the context
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body["probabilities"]) == list(options) and body["answer"] in options


# -------------------------------------------------------------- bad input
@pytest.mark.parametrize("path,body,param", [
    ("/v1/completions", {"prompt": "x", "temperature": -1}, "temperature"),
    ("/v1/completions", {"prompt": "x", "top_p": 0}, "top_p"),
    ("/v1/completions", {"prompt": "x", "n": 1000}, "n"),
    ("/v1/completions", {"prompt": "x", "n": 0}, "n"),
    ("/v1/completions", {"prompt": "x", "max_tokens": "many"}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 600}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("/v1/completions", {"prompt": "x", "stop": ""}, "stop"),
    ("/v1/completions", {"prompt": 5}, "prompt"),
    ("/v1/completions", {}, "prompt"),
    ("/v1/chat/completions", {"messages": []}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ("/v1/mcq", {"question": "q", "options": ["a", "b", "c", "d"]}, "options"),
])
def test_bad_values_are_400(client, path, body, param):
    err = assert_error(client.post(path, json=body), 400)
    assert err["param"] == param and err["type"] == "invalid_request_error"
    assert client.get("/health").status_code == 200


@pytest.mark.fast
def test_context_overflow_names_numbers(client):
    err = assert_error(client.post("/v1/completions", json={"prompt": "word " * 100, "max_tokens": 250}), 400)
    assert "250" in err["message"] and "256" in err["message"] and err["code"] == "context_length_exceeded"
    # No max_tokens: the default shrinks to what the context leaves instead of failing.
    assert client.post("/v1/completions", json={"prompt": "word " * 100, "temperature": 0}).status_code == 200


@pytest.mark.fast
def test_malformed_json_and_wrong_body(client):
    for raw in (b"{not json", b"", b"[1, 2]", b'"prompt"'):
        assert_error(client.post("/v1/completions", content=raw, headers={"content-type": "application/json"}), 400)
    assert_error(client.post("/v1/chat/completions", content=b"{\"messages\": [", headers={
        "content-type": "application/json"}), 400)
    assert client.get("/health").status_code == 200


@pytest.mark.fast
def test_huge_body_is_413(client):
    err = assert_error(client.post("/v1/completions", json={"prompt": "x" * 100_000}), 413)
    assert "65536" in err["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold for chunked uploads too
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    assert_error(client.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"}),
                 413)
    assert client.get("/health").status_code == 200


@pytest.mark.fast
def test_unknown_route_and_method(client):
    assert_error(client.get("/v1/nothing"), 404)
    assert_error(client.get("/v1/completions"), 405)


# ------------------------------------------------------------------- auth
@pytest.mark.fast
def test_api_key(tiny_model, tiny_tokenizer, serving):
    app = create_app(tiny_model, tiny_tokenizer, model_name="tiny", api_key="s3cret")
    with serving(app) as base, httpx.Client(base_url=base, timeout=30) as c:
        req = {"prompt": "x", "max_tokens": 2}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            err = assert_error(c.post("/v1/completions", json=req, headers=headers), 401)
            assert err["type"] == "authentication_error"
        assert_error(c.get("/v1/models"), 401)
        ok = {"Authorization": "Bearer s3cret"}
        assert c.post("/v1/completions", json=req, headers=ok).status_code == 200
        assert c.post("/v1/mcq", json=MCQ_BODY, headers=ok).status_code == 200
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200  # open by design


# ------------------------------------------------------------ concurrency
@pytest.mark.fast
def test_parallel_requests_succeed_and_batch(client, url):
    def one(i: int) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=60) as c:
            return c.post("/v1/completions", json={"prompt": f"Question {i}:", "max_tokens": 8, "temperature": 0})

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(one, range(8)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    # Batched greedy output equals the same request served alone.
    alone = client.post("/v1/completions", json={"prompt": "Question 3:", "max_tokens": 8, "temperature": 0})
    assert responses[3].json()["choices"][0]["text"] == alone.json()["choices"][0]["text"]


@pytest.mark.fast
def test_concurrent_requests_share_decode_steps(tiny_model, tiny_tokenizer, serving):
    # Six requests with different sampling parameters run in one batch: fewer steps than run apart.
    app = create_app(tiny_model, tiny_tokenizer, model_name="tiny")
    with serving(app) as base:
        def one(i: int) -> int:
            with httpx.Client(base_url=base, timeout=60) as c:
                return c.post("/v1/completions", json={"prompt": f"Q{i}", "max_tokens": 24, "temperature": i / 5,
                                                       "top_p": 1 - i / 10, "seed": i}).status_code

        with ThreadPoolExecutor(6) as pool:
            assert list(pool.map(one, range(6))) == [200] * 6
        assert app.state.worker.scheduler.steps < 6 * 24


def test_flood_waits_in_the_queue_and_429_only_when_it_is_full(tiny_model, tiny_tokenizer, serving):
    app = create_app(tiny_model, tiny_tokenizer, model_name="tiny", limits=ServerLimits(max_running_rows=1,
                                                                                        max_queue=2))
    with serving(app) as base:
        def one(_: int) -> httpx.Response:
            with httpx.Client(base_url=base, timeout=60) as c:
                return c.post("/v1/completions", json={"prompt": "x", "max_tokens": 60, "temperature": 1.0})

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(one, range(8)))
        codes = [r.status_code for r in responses]
        # One runs, two wait: at least three served; the rest found the queue full.
        assert set(codes) <= {200, 429} and codes.count(200) >= 3 and 429 in codes, codes
        refused = next(r for r in responses if r.status_code == 429)
        assert assert_error(refused, 429)["code"] == "rate_limit_exceeded" and refused.headers["retry-after"] == "1"
        with httpx.Client(base_url=base, timeout=30) as c:
            assert c.get("/health").json()["active_requests"] == 0

    roomy = create_app(tiny_model, tiny_tokenizer, model_name="tiny", limits=ServerLimits(max_running_rows=1))
    with serving(roomy) as base:  # the same flood with the default queue: all served, none refused
        with ThreadPoolExecutor(8) as pool:
            assert [r.status_code for r in pool.map(one, range(8))] == [200] * 8


# -------------------------------------------------------------------- CLI
@pytest.mark.fast
def test_cli_missing_checkpoint_is_one_line(tmp_path, capsys):
    from pure_transformer.serve import main

    assert main(["--checkpoint", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1


@pytest.mark.fast
def test_cli_port_in_use_is_one_line(tmp_path, capsys):
    import socket

    from pure_transformer.serve import main

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["--checkpoint", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}") and err.count("\n") == 1


@pytest.mark.fast
def test_limits_validate():
    from pure_transformer.errors import ConfigError

    with pytest.raises(ConfigError, match="max_running_rows"):
        ServerLimits(max_running_rows=0)
    with pytest.raises(ConfigError, match="max_queue"):
        ServerLimits(max_queue=0)


# ------------------------------------------------------------------ page
@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium not installed (.ci/run installs it)")
def test_page_answers_in_headless_chromium(url):
    """The page loads, runs its script, calls /v1/mcq and renders the answer and the bars."""
    import subprocess
    from urllib.parse import urlencode

    query = urlencode({"question": "Which drug is first-line for absence seizures?", "A": "Ethosuximide",
                       "B": "Phenytoin", "C": "Lithium", "D": "Warfarin"})
    out = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--no-first-run", "--virtual-time-budget=20000",
                          "--dump-dom", f"{url}/?{query}"], capture_output=True, text=True, timeout=120)
    assert "Not medical advice" in out.stdout, out.stderr[-2000:]
    assert 'id="mcq-answer"' in out.stdout and "Model's answer:" in out.stdout, out.stdout[-3000:]
    assert out.stdout.count('class="fill"') >= 4  # one probability bar per letter


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium not installed (.ci/run installs it)")
def test_page_shows_the_explanation_above_the_answer_in_headless_chromium(tiny_model, tiny_tokenizer, serving):
    """An explain-format model: the page shows the model's explanation, then its answer (or "none" and why)."""
    import subprocess
    from urllib.parse import urlencode

    from pure_transformer.mcq.answer_format import AnswerFormat

    app = create_app(tiny_model, tiny_tokenizer, model_name="tiny", answer_format=AnswerFormat.EXPLAIN)
    query = urlencode({"question": MCQ_BODY["question"], **MCQ_BODY["options"]})
    with serving(app) as base:
        out = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                              "--disable-background-networking", "--disable-component-update", "--no-first-run",
                              "--virtual-time-budget=20000", "--dump-dom", f"{base}/?{query}"],
                             capture_output=True, text=True, timeout=120)
    dom = out.stdout
    assert 'id="mcq-explanation"' in dom and 'id="mcq-answer"' in dom, dom[-3000:]
    assert dom.index("Model's explanation:") < dom.index("Model's answer:"), dom[-3000:]


