"""The server's OpenAI surface beyond the basics: token and list prompts, echo and
log-probs against a forward pass, usage chunks, the official client, protocol-level
rejections (fixtures in conftest.py)."""

from __future__ import annotations

import json

import httpx
import pytest
from serve_checks import assert_error, sse_events

from pure_transformer.serving.app import create_app


# ------------------------------------------------- token prompts, logprobs, echo, usage
@pytest.mark.fast
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


@pytest.mark.fast
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


@pytest.mark.fast
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


def _streamed_choices(client: httpx.Client, body: dict) -> dict[int, dict]:
    """A streamed completion put back together per choice index: text, finish_reason, and the
    chunks' logprobs concatenated (None when no chunk carries any)."""
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        chunks = sse_events(r)
    out: dict[int, dict] = {}
    for chunk in chunks:
        (c,) = chunk["choices"]
        got = out.setdefault(c["index"], {"text": "", "finish_reason": None, "logprobs": None})
        got["text"] += c["text"]
        assert got["finish_reason"] is None  # nothing follows a choice's last chunk
        got["finish_reason"] = c["finish_reason"]
        if c["logprobs"] is not None:
            lp = got["logprobs"] = got["logprobs"] or {k: [] for k in c["logprobs"]}
            for k, v in c["logprobs"].items():
                lp[k] += v
    return out


@pytest.mark.parametrize("extra", [{}, {"echo": True}, {"logprobs": 2}, {"echo": True, "logprobs": 1},
                                   {"echo": True, "logprobs": 1, "prompt": [[17, 42, 99], [5, 6], [300]]}])
@pytest.mark.fast
def test_stream_takes_prompt_lists_echo_and_logprobs_as_the_plain_answer_gives_them(client, extra):
    # OpenAI streams all three; each choice (index i * n + j) adds up to the non-streamed choice.
    body = {"prompt": ["Question: fever?", "The heart", "A"], "n": 2, "max_tokens": 7, "temperature": 0,
            **extra}
    plain = client.post("/v1/completions", json=body)
    assert plain.status_code == 200, plain.text
    streamed = _streamed_choices(client, body)
    assert sorted(streamed) == list(range(6))
    for want in plain.json()["choices"]:
        got = streamed[want["index"]]
        assert got["text"] == want["text"] and got["finish_reason"] == want["finish_reason"]
        if "logprobs" not in extra:
            assert got["logprobs"] is None
            continue
        w, g = want["logprobs"], got["logprobs"]
        assert g["tokens"] == w["tokens"] and g["text_offset"] == w["text_offset"]
        assert g["token_logprobs"] == pytest.approx(w["token_logprobs"], abs=1e-4)
        for gt, wt in zip(g["top_logprobs"], w["top_logprobs"]):
            assert (gt is None) == (wt is None) and (gt is None or gt == pytest.approx(wt, abs=1e-4))


@pytest.mark.parametrize("body, param", [
    ({"prompt": [[1, 2], [99999]]}, "prompt"),
    ({"prompt": [-1]}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": "x", "logprobs": 6}, "logprobs"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}, None),
])
@pytest.mark.fast
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


@pytest.mark.fast
def test_seed_out_of_range_is_400_naming_seed(client):
    for seed in (2**63, -1):
        err = assert_error(client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2, "seed": seed}), 400)
        assert err["param"] == "seed"
    r = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2, "seed": 2**63 - 1, "n": 3})
    assert r.status_code == 200, r.text  # the top seed with n > 1 wraps, never overflows


@pytest.mark.fast
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


@pytest.mark.fast
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


@pytest.mark.fast
def test_a_stream_that_fails_part_way_still_ends_with_done(tiny_model, tiny_tokenizer, serving, monkeypatch):
    from pure_transformer.inference import scheduler

    real, steps = scheduler.decode_step, []

    def failing(model, tokens, cache):  # fault injection: the engine raises on the third decode step
        steps.append(1)
        if len(steps) == 3:
            raise ValueError("injected failure")
        return real(model, tokens, cache)

    monkeypatch.setattr(scheduler, "decode_step", failing)
    with serving(create_app(tiny_model, tiny_tokenizer, model_name="tiny")) as base, \
            httpx.Client(base_url=base, timeout=30) as c:
        with c.stream("POST", "/v1/completions", json={"prompt": "Question:", "max_tokens": 8, "temperature": 0,
                                                       "stream": True}) as r:
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert "injected failure" in lines[-2] and lines[-1] == "data: [DONE]"
        # The failure cost that batch, not the server: the next request is served.
        again = c.post("/v1/completions", json={"prompt": "Question:", "max_tokens": 4, "temperature": 0})
        assert again.status_code == 200 and again.json()["usage"]["completion_tokens"] >= 1
