"""The HTTP server, through a real socket: uvicorn on 127.0.0.1 (port 0) in a
background thread, httpx as the client, a tiny random model behind it."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from pure_transformer.config import ModelConfig
from pure_transformer.model import build_model
from pure_transformer.serving.app import create_app
from pure_transformer.serving.schemas import ChatMessage, ServerLimits, chat_prompt

MCQ_BODY = {"question": "Which vitamin deficiency causes scurvy?",
            "options": {"A": "Vitamin A", "B": "Vitamin B12", "C": "Vitamin C", "D": "Vitamin D"}}


@pytest.fixture(scope="module")
def tiny_model():
    import torch

    torch.manual_seed(0)
    return build_model(ModelConfig(vocab_size=512, dim=64, n_layers=2, n_heads=4, ffn_dim=128, max_seq_len=256))


@pytest.fixture(scope="module")
def url(tiny_model, tiny_tokenizer, serving) -> Iterator[str]:
    app = create_app(tiny_model, tiny_tokenizer, model_name="tiny", limits=ServerLimits(max_concurrency=16))
    with serving(app) as base:
        yield base


@pytest.fixture
def client(url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as c:
        yield c


def assert_error(r: httpx.Response, status: int | tuple[int, ...]) -> dict:
    assert r.status_code in ((status,) if isinstance(status, int) else status), r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and "\n" not in err["message"]
    return err


def sse_events(r: httpx.Response) -> list:
    """Parse ``data: ...`` events; the last must be [DONE]."""
    events = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert events and events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


# ------------------------------------------------------------------ basics
def test_health_models_and_page(client):
    assert client.get("/health").json()["status"] == "ok"
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "tiny"
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "Not medical advice" in page.text and "research demo" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no external assets


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


def test_completion_n_and_seed(client):
    req = {"prompt": "The heart", "max_tokens": 6, "temperature": 1.0, "n": 3, "seed": 7}
    a, b = client.post("/v1/completions", json=req).json(), client.post("/v1/completions", json=req).json()
    assert [c["index"] for c in a["choices"]] == [0, 1, 2]
    assert [c["text"] for c in a["choices"]] == [c["text"] for c in b["choices"]]  # seeded: reproducible


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


def test_chat_template():
    text = chat_prompt([ChatMessage(role="system", content="S"), ChatMessage(role="user", content="hi"),
                        ChatMessage(role="assistant", content="hello"), ChatMessage(role="user", content="bye")])
    assert text == "S\n\nUser: hi\nAssistant: hello\nUser: bye\nAssistant:"


# --------------------------------------------------------------- streaming
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
def test_mcq_probabilities(client):
    r = client.post("/v1/mcq", json=MCQ_BODY)
    assert r.status_code == 200, r.text
    body = r.json()
    probs = body["probabilities"]
    assert list(probs) == ["A", "B", "C", "D"] and abs(sum(probs.values()) - 1) < 1e-5
    assert all(0 <= p <= 1 for p in probs.values())
    assert body["answer"] == max(probs, key=probs.get)


@pytest.mark.parametrize("options", [
    {"A": "1", "B": "2", "C": "3", "D": "4", "E": "5"},
    {"A": "1", "B": "2", "C": "3"},
    {"A": "1", "B": "2", "C": "3", "X": "4"},
    {"A": "1", "B": "2", "C": "3", "D": "  "},
])
def test_mcq_bad_options(client, options):
    err = assert_error(client.post("/v1/mcq", json={"question": "q?", "options": options}), 400)
    assert err["param"] == "options"


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


def test_context_overflow_names_numbers(client):
    err = assert_error(client.post("/v1/completions", json={"prompt": "word " * 100, "max_tokens": 250}), 400)
    assert "250" in err["message"] and "256" in err["message"] and err["code"] == "context_length_exceeded"
    # No max_tokens: the default shrinks to what the context leaves instead of failing.
    assert client.post("/v1/completions", json={"prompt": "word " * 100, "temperature": 0}).status_code == 200


def test_malformed_json_and_wrong_body(client):
    for raw in (b"{not json", b"", b"[1, 2]", b'"prompt"'):
        assert_error(client.post("/v1/completions", content=raw, headers={"content-type": "application/json"}), 400)
    assert_error(client.post("/v1/chat/completions", content=b"{\"messages\": [", headers={
        "content-type": "application/json"}), 400)
    assert client.get("/health").status_code == 200


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


def test_unknown_route_and_method(client):
    assert_error(client.get("/v1/nothing"), 404)
    assert_error(client.get("/v1/completions"), 405)


# ------------------------------------------------------------------- auth
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


def test_batching_merges_requests(tiny_model, tiny_tokenizer, serving):
    app = create_app(tiny_model, tiny_tokenizer, model_name="tiny", limits=ServerLimits(batch_window_s=0.05))
    with serving(app) as base:
        def one(i: int) -> int:
            with httpx.Client(base_url=base, timeout=60) as c:
                return c.post("/v1/completions", json={"prompt": f"Q{i}", "max_tokens": 4, "temperature": 0,
                                                       "top_p": 1}).status_code

        with ThreadPoolExecutor(6) as pool:
            assert list(pool.map(one, range(6))) == [200] * 6
        assert app.state.worker.batches < 6


def test_flood_gets_429(tiny_model, tiny_tokenizer, serving):
    app = create_app(tiny_model, tiny_tokenizer, model_name="tiny", limits=ServerLimits(max_concurrency=1))
    with serving(app) as base:
        def one(_: int) -> httpx.Response:
            with httpx.Client(base_url=base, timeout=60) as c:
                return c.post("/v1/completions", json={"prompt": "x", "max_tokens": 60, "temperature": 1.0})

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(one, range(8)))
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 429} and 200 in codes and 429 in codes, codes
        err = assert_error(next(r for r in responses if r.status_code == 429), 429)
        assert err["code"] == "rate_limit_exceeded"
        with httpx.Client(base_url=base, timeout=30) as c:
            assert c.get("/health").json()["active_requests"] == 0


# -------------------------------------------------------------------- CLI
def test_cli_missing_checkpoint_is_one_line(tmp_path, capsys):
    from pure_transformer.serve import main

    assert main(["--checkpoint", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1


def test_cli_port_in_use_is_one_line(tmp_path, capsys):
    import socket

    from pure_transformer.serve import main

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["--checkpoint", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}") and err.count("\n") == 1


def test_limits_validate():
    from pure_transformer.errors import ConfigError

    with pytest.raises(ConfigError, match="max_concurrency"):
        ServerLimits(max_concurrency=0)


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


@pytest.mark.parametrize("fmt", ["text", "explain"])
def test_mcq_in_the_checkpoint_format(fmt: str, tiny_model, tiny_tokenizer, serving) -> None:
    """A text/explain model is asked the way it was trained: the option texts are scored
    (after a greedy explanation for explain), and the probabilities are a distribution."""
    from pure_transformer.answer_format import AnswerFormat

    app = create_app(tiny_model, tiny_tokenizer, model_name="tiny", answer_format=AnswerFormat(fmt))
    with serving(app) as base, httpx.Client(base_url=base, timeout=30) as c:
        body = c.post("/v1/mcq", json=MCQ_BODY).json()
    assert body["answer_format"] == fmt and body["answer"] in "ABCD"
    assert sum(body["probabilities"].values()) == pytest.approx(1.0)
    assert body["answer"] == max(body["probabilities"], key=body["probabilities"].get)
    assert ("explanation" in body) == (fmt == "explain")


# ------------------------------------------------- token prompts, logprobs, echo, usage
def test_token_and_list_prompts_match_text(client, tiny_tokenizer):
    text = "Question: fever and cough?"
    base = {"max_tokens": 8, "temperature": 0}
    plain = client.post("/v1/completions", json={**base, "prompt": text}).json()["choices"][0]["text"]
    ids = tiny_tokenizer.encode(text)
    for prompt in (ids, [tiny_tokenizer.eot_id] + ids):  # a leading end-of-text is not doubled
        assert client.post("/v1/completions", json={**base, "prompt": prompt}).json()["choices"][0]["text"] == plain
    other = client.post("/v1/completions", json={**base, "prompt": "Answer:"}).json()["choices"][0]["text"]
    body = client.post("/v1/completions", json={**base, "prompt": [text, "Answer:"], "n": 2}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert [c["text"] for c in body["choices"]] == [plain, plain, other, other]
    body = client.post("/v1/completions", json={**base, "prompt": [ids, tiny_tokenizer.encode("Answer:")]}).json()
    assert [c["text"] for c in body["choices"]] == [plain, other]


def test_echo_logprobs_against_a_forward_pass(client, tiny_model, tiny_tokenizer):
    # lm-eval's local-completions request: token ids, echo, logprobs=1, max_tokens=1.
    import torch

    ids = tiny_tokenizer.encode("Question: A 45-year-old man has fever.\nAnswer: C")
    r = client.post("/v1/completions", json={"prompt": [ids], "echo": True, "logprobs": 1, "max_tokens": 1,
                                             "temperature": 0, "seed": 1234})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    lp = choice["logprobs"]
    assert len(lp["token_logprobs"]) == len(lp["tokens"]) == len(lp["top_logprobs"]) == len(ids) + 1
    full = [tiny_tokenizer.eot_id] + ids
    with torch.no_grad():
        _, logits = tiny_model(torch.tensor([full]))
    ref = torch.log_softmax(logits[0].double(), dim=-1)
    for t, value in enumerate(lp["token_logprobs"][:len(ids)]):
        assert value == pytest.approx(ref[t, ids[t]].item(), abs=1e-4)
    greedy = int(ref[-1].argmax())
    assert lp["token_logprobs"][-1] == pytest.approx(ref[-1, greedy].item(), abs=1e-4)
    assert all(max(top.values()) >= value - 1e-6 for top, value in zip(lp["top_logprobs"], lp["token_logprobs"]))
    text = tiny_tokenizer.decode(ids)
    assert choice["text"].startswith(text) and "".join(lp["tokens"][:len(ids)]) == text
    assert lp["text_offset"][:3] == [0, len(lp["tokens"][0]), len(lp["tokens"][0]) + len(lp["tokens"][1])]
    # without echo: the completion's tokens only; without logprobs: null
    r = client.post("/v1/completions", json={"prompt": ids, "logprobs": 2, "max_tokens": 3, "temperature": 0})
    lp = r.json()["choices"][0]["logprobs"]
    # two ids can decode to one string (a half character): the legacy shape keys by string, as OpenAI's
    assert len(lp["token_logprobs"]) == 3 and all(1 <= len(t) <= 2 for t in lp["top_logprobs"])
    assert client.post("/v1/completions", json={"prompt": ids, "echo": True, "max_tokens": 2}
                       ).json()["choices"][0]["logprobs"] is None


def test_stream_usage_chunk_and_text_parts(client):
    req = {"prompt": "Question: cough?", "max_tokens": 6, "temperature": 0, "stream": True,
           "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/completions", json=req) as r:
        chunks = sse_events(r)
    assert chunks[-1]["choices"] == [] and all(c["choices"] for c in chunks[:-1])
    usage = chunks[-1]["usage"]
    plain = client.post("/v1/completions", json={**req, "stream": False}).json()
    assert usage == plain["usage"]
    chat = {"max_tokens": 6, "temperature": 0}
    as_text = client.post("/v1/chat/completions", json={**chat, "messages": [{"role": "user", "content": "Hi\nthere"}]})
    as_parts = client.post("/v1/chat/completions", json={**chat, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]}]})
    assert as_parts.json()["choices"][0]["message"] == as_text.json()["choices"][0]["message"]


@pytest.mark.parametrize("body, param", [
    ({"prompt": [[1, 2], [99999]]}, "prompt"),
    ({"prompt": [-1]}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": "x", "stream": True, "logprobs": 1}, "stream"),
    ({"prompt": ["a", "b"], "stream": True}, "stream"),
    ({"prompt": "x", "logprobs": 6}, "logprobs"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}, None),
])
def test_bad_prompts_are_400(client, body, param):
    path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    err = assert_error(client.post(path, json={"max_tokens": 2, **body}), 400)
    if param is not None:
        assert err["param"] in (param, f"body.{param}") or param in err["message"]


def test_official_openai_client(url):
    # docs/INFERENCE.md's recipe, as written there.
    openai = pytest.importorskip("openai", reason="the openai client is not installed (pip install -e '.[dev]')")
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused-without---api-key")
    done = client.completions.create(model="x", prompt="The first-line treatment for asthma is", max_tokens=16,
                                     temperature=0)
    assert done.choices[0].finish_reason in ("stop", "length") and done.usage.completion_tokens >= 1
    chunks = list(client.chat.completions.create(model="x", messages=[{"role": "user", "content": "Hi"}], stream=True,
                                                 stream_options={"include_usage": True}, max_tokens=16))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    plain = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "Hi"}], max_tokens=16,
                                           temperature=1.0, seed=None)
    assert isinstance(text, str) and plain.choices[0].message.role == "assistant"
    scored = client.completions.create(model="x", prompt=[[5, 6, 7]], max_tokens=1, echo=True, logprobs=1,
                                       temperature=0)
    assert len(scored.choices[0].logprobs.token_logprobs) == 4


def test_seed_out_of_range_is_400_naming_seed(client):
    for seed in (2**63, -1):
        err = assert_error(client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2, "seed": seed}), 400)
        assert err["param"] == "seed"
    r = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2, "seed": 2**63 - 1, "n": 3})
    assert r.status_code == 200, r.text  # the top seed with n > 1 wraps, never overflows


def test_stalled_body_gets_408(tiny_model, tiny_tokenizer, serving):
    import socket

    app = create_app(tiny_model, tiny_tokenizer, model_name="tiny")
    for middleware in app.user_middleware:
        if middleware.cls.__name__ == "BodyLimitMiddleware":
            middleware.kwargs["timeout_s"] = 0.5
    with serving(app) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"prompt\": ")  # and then nothing more: a slowloris client
            reply = ""  # the head and the body may arrive in separate segments
            while "}}" not in reply and (chunk := s.recv(65536)):
                reply += chunk.decode()
    assert reply.startswith("HTTP/1.1 408") and '"code":"request_timeout"' in reply.replace(" ", "")


def test_protocol_level_rejections_are_openai_shaped(tiny_model, tiny_tokenizer, serving):
    # What uvicorn refuses before the app runs: a bad Content-Length, a request line that is not HTTP.
    import socket

    from pure_transformer.serving.http import openai_h11_protocol

    app = create_app(tiny_model, tiny_tokenizer, model_name="tiny")
    with serving(app, http=openai_h11_protocol(), h11_max_incomplete_event_size=16 * 1024) as base:
        host, port = base.removeprefix("http://").split(":")
        for raw in (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 9\r\n\r\n",
                    b"NOT-HTTP\r\n\r\n"):
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(raw)
                reply = b""
                while chunk := s.recv(65536):
                    reply += chunk
            head, _, body = reply.decode().partition("\r\n\r\n")
            assert head.startswith("HTTP/1.1 400") and "application/json" in head, reply[:300]
            err = json.loads(body)["error"]
            assert set(err) == {"message", "type", "param", "code"} and err["message"].startswith("malformed HTTP")
        with httpx.Client(base_url=base, timeout=10) as c:  # and everything else is untouched
            assert c.get("/health").json()["status"] == "ok"


def test_a_stream_that_fails_part_way_still_ends_with_done(tiny_model, tiny_tokenizer, serving, monkeypatch):
    from pure_transformer.serving import worker

    real = worker.TokenTap.stream

    def failing(self, prompt, params):  # fault injection: the engine raises after two tokens
        for i, token in enumerate(real(self, prompt, params)):
            if i == 2:
                raise ValueError("injected failure")
            yield token

    monkeypatch.setattr(worker.TokenTap, "stream", failing)
    with serving(create_app(tiny_model, tiny_tokenizer, model_name="tiny")) as base, \
            httpx.Client(base_url=base, timeout=30) as c:
        with c.stream("POST", "/v1/completions", json={"prompt": "Question:", "max_tokens": 8, "temperature": 0,
                                                       "stream": True}) as r:
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert "injected failure" in lines[-2] and lines[-1] == "data: [DONE]"
