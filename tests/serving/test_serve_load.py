"""The server under load: continuous batching gives each request the tokens it would
get alone, the queue (429, 503), disconnects, admission caps and /metrics."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from serve_checks import assert_error, sse_events

from pure_transformer.inference.engine import Engine, SamplingParams, decode_step, prefill
from pure_transformer.serving.app import create_app
from pure_transformer.serving.schemas import ServerLimits

PROMPTS = ["Question: fever and rash?", "The heart", "A", "Patients with diabetes often", "x y z"]


def _crowd(base: str) -> list[dict]:
    """Requests with every mix of parameters, streams among them, so the greedy and seeded
    ones below share their steps with rows sampled under other settings."""
    reqs = []
    for i in range(10):
        reqs.append({"prompt": PROMPTS[i % 5] + f" {i}", "max_tokens": 5 + 3 * i, "temperature": 0.3 + i / 10,
                     "top_p": 1 - i / 20, "n": 1 + i % 3, "stream": i % 3 == 0, **({"seed": i} if i % 2 else {})})
    return reqs


def _send(base: str, body: dict) -> str | list[str]:
    with httpx.Client(base_url=base, timeout=60) as c:
        if body.get("stream"):
            with c.stream("POST", "/v1/completions", json=body) as r:
                assert r.status_code == 200
                events = sse_events(r)
            return "".join(e["choices"][0]["text"] for e in events if e["choices"])
        r = c.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        return [ch["text"] for ch in r.json()["choices"]]


def _amid_crowd(base: str, mine: list[dict]) -> list:
    with ThreadPoolExecutor(16) as pool:
        crowd = [pool.submit(_send, base, b) for b in _crowd(base)]
        time.sleep(0.05)  # the crowd is running when ours arrive
        ours = [pool.submit(_send, base, b) for b in mine]
        assert all(isinstance(f.result(), (str, list)) for f in crowd)
        return [f.result() for f in ours]


def test_greedy_tokens_equal_engine_generate_alone(url, tiny_model, tiny_tokenizer):
    engine = Engine(tiny_model, tiny_tokenizer)
    mine = [{"prompt": p, "max_tokens": 20, "temperature": 0, "stream": i == 1} for i, p in enumerate(PROMPTS)]
    got = _amid_crowd(url, mine)
    for body, text in zip(mine, got):
        ids = [tiny_tokenizer.eot_id] + tiny_tokenizer.encode(body["prompt"])
        alone = engine.generate([ids], SamplingParams(max_new_tokens=20, temperature=0))[0][0].text
        assert (text if body["stream"] else text[0]) == alone, body


def test_seeded_request_gives_the_same_tokens_alone_and_in_a_crowd(url, tiny_model, tiny_tokenizer):
    mine = [{"prompt": "The patient", "max_tokens": 24, "temperature": 0.9, "top_p": 0.9, "n": 3, "seed": 11},
            {"prompt": "Blood pressure", "max_tokens": 16, "temperature": 1.3, "seed": 5},
            {"prompt": "Blood pressure", "max_tokens": 16, "temperature": 1.3, "seed": 5, "stream": True}]
    alone = [_send(url, b) for b in mine]
    assert _amid_crowd(url, mine) == alone
    # And the same as Engine.generate draws for that prompt alone with that seed.
    engine = Engine(tiny_model, tiny_tokenizer)
    ids = [tiny_tokenizer.eot_id] + tiny_tokenizer.encode("The patient")
    samples = engine.generate([ids], SamplingParams(max_new_tokens=24, temperature=0.9, top_p=0.9, seed=11), 3)[0]
    assert alone[0] == [s.text for s in samples]
    assert alone[1] == [alone[2]]  # streamed or not, the same sample


@pytest.mark.fast
def test_pool_rows_joined_apart_and_sharing_prefixes_decode_like_their_own_prefill(tiny_model):
    # Rows of different lengths join the pool at different times, one reusing another's prefix, another
    # a prompt's second sample: each row's logits are those of its own prompt prefilled alone.
    from pure_transformer.inference.row_pool import RowPool

    a, b, c = [5, 6, 7, 8, 9, 10, 11], [3, 4], [5, 6, 7, 8, 9, 1, 2, 3]
    pool = RowPool(tiny_model, 8, 0, torch.float32)
    with torch.no_grad():
        rows = pool.join([a, b], [1, 2], 20)
        assert rows == [[0], [1, 2]] and pool.reused_tokens == 0
        later = pool.join([c], [1], 20)[0][0]
        assert later == 3 and pool.reused_tokens == 5  # c's first 5 tokens were a's
        running = {0: 1, 2: 2, later: 3}  # row 1 (b's first sample) has finished
        pool.free(1)
        want = {}
        for p, r in ((a, 0), (b, 2), (c, later)):
            alone, last = prefill(tiny_model, [p], 20, torch.float32)
            torch.testing.assert_close(pool.logits[r], last[0, -1], atol=1e-5, rtol=1e-5)
            want[r] = decode_step(tiny_model, torch.tensor([running[r]]), alone)[0]
        pool.decode(running, decode_step)  # one step for the three rows, row 1 free in between
        for r, logits in want.items():
            torch.testing.assert_close(pool.logits[r], logits, atol=1e-5, rtol=1e-5)


def _metrics(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return {f"{s.name}{json.dumps(s.labels, sort_keys=True) if s.labels else ''}": s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.fast
def test_disconnect_frees_rows_at_the_next_step(tiny_model, tiny_tokenizer, serving, monkeypatch):
    from pure_transformer.inference import scheduler

    real = scheduler.decode_step

    def slow(model, tokens, cache):  # 20 ms a step: 240 tokens would take 5 s
        time.sleep(0.02)
        return real(model, tokens, cache)

    monkeypatch.setattr(scheduler, "decode_step", slow)
    app = create_app(tiny_model, tiny_tokenizer, model_name="tiny")
    with serving(app) as base:
        with httpx.Client(base_url=base, timeout=30) as c:
            with c.stream("POST", "/v1/completions", json={"prompt": "x", "max_tokens": 240, "n": 8, "stream": True,
                                                           "temperature": 1.0, "top_p": 0.95}) as r:
                next(r.iter_lines())  # one event, then the client goes away mid-stream
            with pytest.raises(httpx.ReadTimeout):  # a non-streaming client that gives up
                c.post("/v1/completions", json={"prompt": "y", "max_tokens": 240, "n": 16, "temperature": 1.0},
                       timeout=0.5)
            left = time.monotonic()
            while (h := c.get("/health").json())["running_rows"] or h["active_requests"]:
                assert time.monotonic() - left < 1.5, f"disconnected clients kept their rows: {h}"
                time.sleep(0.05)
        m = _metrics(base)
        assert m["pure_transformer_disconnects_total"] == 2
        assert app.state.worker.scheduler.steps < 120  # neither ran anywhere near its 240 tokens


def test_queue_timeout_is_a_503_never_a_hang(tiny_model, tiny_tokenizer, serving):
    app = create_app(tiny_model, tiny_tokenizer, model_name="tiny", limits=ServerLimits(queue_timeout_s=0.3))
    with serving(app) as base, httpx.Client(base_url=base, timeout=30) as c:
        for body in ({"prompt": "x", "max_tokens": 4}, {"prompt": "x", "max_tokens": 4, "stream": True}):
            busy = app.state.worker.scheduler.call(time.sleep, 1.5)  # the model thread is held past the timeout
            started = time.monotonic()
            r = c.post("/v1/completions", json=body)
            err = assert_error(r, 503)
            assert err["code"] == "queue_timeout" and r.headers["retry-after"] == "1"
            assert time.monotonic() - started < 5
            busy.result(timeout=10)
        assert c.post("/v1/completions", json={"prompt": "x", "max_tokens": 4}).status_code == 200
        m = _metrics(base)
        assert m["pure_transformer_queue_timeouts_total"] == 2 and m["pure_transformer_disconnects_total"] == 0
        assert c.get("/health").json()["active_requests"] == 0  # the refused stream holds nothing


def test_admission_caps_rows_and_kv_slots_yet_serves_everyone(tiny_model, tiny_tokenizer, serving):
    # 4 rows at most, and a KV budget of 4 rows x 64 slots: 12 requests of 2 samples all served, in turns.
    app = create_app(tiny_model, tiny_tokenizer, model_name="tiny",
                     limits=ServerLimits(max_running_rows=4, kv_cache_tokens=4 * 64))
    with serving(app) as base:
        bodies = [{"prompt": f"Q{i}", "max_tokens": 30, "n": 2, "temperature": 0.7 if i % 2 else 0,
                   "stream": i % 4 == 0} for i in range(12)]
        with ThreadPoolExecutor(12) as pool:
            assert all(pool.map(lambda b: _send(base, b), bodies))
        m = _metrics(base)
    steps = m["pure_transformer_batch_rows_count"]
    assert m['pure_transformer_batch_rows_bucket{"le": "4.0"}'] == steps  # never more than 4 rows
    assert m['pure_transformer_batch_rows_bucket{"le": "2.0"}'] < steps  # yet batched: some steps ran 3-4 rows
    assert m['pure_transformer_requests_total{"status": "200"}'] == 12


@pytest.mark.fast
def test_metrics_parse_and_count(client, url):
    client.post("/v1/completions", json={"prompt": "The heart", "max_tokens": 6, "temperature": 0})
    client.post("/v1/completions", json={"prompt": "x", "temperature": 9})  # a 400
    m = _metrics(url)
    for name in ("requests_waiting", "requests_running", "running_rows", "prompt_tokens_total",
                 "generation_tokens_total", "time_to_first_token_seconds_count",
                 "time_per_output_token_seconds_count", "e2e_request_latency_seconds_count", "batch_rows_count"):
        assert f"pure_transformer_{name}" in m, name
    assert m["pure_transformer_generation_tokens_total"] >= 6 and m["pure_transformer_prompt_tokens_total"] > 0
    assert m["pure_transformer_e2e_request_latency_seconds_count"] >= 1
    assert m['pure_transformer_requests_total{"status": "400"}'] >= 1
    health = client.get("/health").json()
    assert {"waiting_requests", "running_requests", "running_rows"} <= health.keys()


@pytest.mark.fast
def test_bench_serve_measures_both_servers_alike(url):
    from pure_transformer.bench.serve import HEADER, bench_serve, markdown_table

    levels = bench_serve({"new": url, "baseline": url}, [1, 3], per_client=2, stream_share=0.5, max_tokens=4, seed=0,
                         sequential=3, say=lambda *a, **k: None)
    assert [(lv.clients, lv.server) for lv in levels] == [
        ("1", "new"), ("1", "baseline"), ("3", "new"), ("3", "baseline"),
        ("1 (the 3-client requests in sequence)", "new"), ("1 (the 3-client requests in sequence)", "baseline")]
    assert all(lv.sent == len(lv.outcomes) and all(o.status == 200 and o.tokens >= 1 for o in lv.outcomes)
               for lv in levels)
    assert levels[2].sent == levels[4].sent == 6  # the sequential level replays the 3-client requests
    table = markdown_table(levels).splitlines()
    assert table[0] == "| " + " | ".join(HEADER) + " |" and len(table) == 2 + len(levels)
    assert "6/6" in table[4]


@pytest.mark.fast
def test_bench_serve_profile_splits_the_model_threads_time(url):
    from pure_transformer.bench.serve import PROFILE_HEADER, bench_serve, profile_table

    levels = bench_serve({"new": url}, [2], per_client=2, stream_share=0.5, max_tokens=6, seed=1, sequential=None,
                         say=lambda *a, **k: None, profile=True)
    phases = levels[0].phases
    assert phases is not None and phases["steps"] >= 6  # 4 requests of 3 tokens or more
    assert phases["forward"] > 0 and phases["sampling"] > 0
    assert sum(phases[k] for k in ("join", "sampling", "rows", "forward")) <= levels[0].wall_s
    table = profile_table(levels).splitlines()
    assert table[0] == "| " + " | ".join(PROFILE_HEADER) + " |" and len(table) == 3


def test_a_long_and_a_short_row_share_the_pool_yet_decode_as_alone(tiny_model, tiny_tokenizer, serving, monkeypatch):
    # A 200-token prompt is running when a short one with 200 tokens to go joins: each row holds its own
    # slots, so the pool needs no more than the longest row (no alignment of one row to another).
    from pure_transformer.inference import scheduler
    from pure_transformer.inference.row_pool import SLOT_STEP

    real, capacities = scheduler.decode_step, []

    def watched(model, tokens, cache):
        capacities.append(cache.capacity)
        time.sleep(0.01)  # slow enough that the long prompt is still running when the short one joins
        return real(model, tokens, cache)

    monkeypatch.setattr(scheduler, "decode_step", watched)
    long_ids = [tiny_tokenizer.eot_id] + [(7 * i) % 500 + 1 for i in range(199)]
    bodies = [{"prompt": long_ids, "max_tokens": 40, "temperature": 0},
              {"prompt": "The heart", "max_tokens": 200, "temperature": 0}]
    app = create_app(tiny_model, tiny_tokenizer, model_name="tiny")
    with serving(app) as base, ThreadPoolExecutor(2) as pool:
        first = pool.submit(_send, base, bodies[0])
        while not app.state.worker.scheduler.running_rows:  # the long prompt is decoding (0.4 s or more)
            time.sleep(0.01)
        second = pool.submit(_send, base, bodies[1])
        texts = [first.result(), second.result()]
    assert max(capacities) <= -(-(tiny_model.cfg.max_seq_len + 1) // SLOT_STEP) * SLOT_STEP
    engine = Engine(tiny_model, tiny_tokenizer)
    for body, text in zip(bodies, texts):
        ids = body["prompt"] if isinstance(body["prompt"], list) else \
            [tiny_tokenizer.eot_id] + tiny_tokenizer.encode(body["prompt"])
        alone = engine.generate([ids], SamplingParams(max_new_tokens=body["max_tokens"], temperature=0))[0][0]
        assert text == [alone.text]


@pytest.mark.fast
def test_a_request_admitted_in_waves_never_times_out_and_counts_as_one_running(tiny_model, tiny_tokenizer, serving,
                                                                                monkeypatch):
    # 6 prompts x n=2 in a 4-row batch run in 3 waves, far longer than the 0.3 s queue timeout: its later
    # prompts wait for its earlier ones, which is the request running, not queueing (it used to get 503).
    from pure_transformer.inference import scheduler

    real = scheduler.decode_step

    def slow(model, tokens, cache):
        time.sleep(0.01)
        return real(model, tokens, cache)

    monkeypatch.setattr(scheduler, "decode_step", slow)
    app = create_app(tiny_model, tiny_tokenizer, model_name="tiny",
                     limits=ServerLimits(queue_timeout_s=0.3, max_running_rows=4))
    health: list[dict] = []
    with serving(app) as base, httpx.Client(base_url=base, timeout=30) as c, ThreadPoolExecutor(1) as pool:
        reply = pool.submit(c.post, "/v1/completions", json={"prompt": [f"p{i}" for i in range(6)], "n": 2,
                                                              "max_tokens": 40, "temperature": 0})
        while not reply.done():
            if (h := c.get("/health").json())["running_rows"]:
                health.append(h)
            time.sleep(0.05)
        r = reply.result()
        assert r.status_code == 200 and len(r.json()["choices"]) == 12, r.text
        # Streamed, it starts once its first prompt joins and streams every choice to the end.
        with c.stream("POST", "/v1/completions", json={"prompt": [f"p{i}" for i in range(6)], "n": 2,
                                                       "max_tokens": 40, "temperature": 0, "stream": True}) as s:
            chunks = sse_events(s)
        assert [ch["text"] for ch in r.json()["choices"]] == [
            "".join(e["choices"][0]["text"] for e in chunks if e["choices"][0]["index"] == i) for i in range(12)]
        assert _metrics(base)["pure_transformer_queue_timeouts_total"] == 0
    # Partly admitted, it is one running request and nothing waits.
    assert health and all(h["waiting_requests"] == 0 and h["running_requests"] == 1 for h in health), health


@pytest.mark.fast
def test_a_queue_timeout_counts_the_request_once_not_each_prompt(tiny_model, tiny_tokenizer, serving):
    app = create_app(tiny_model, tiny_tokenizer, model_name="tiny", limits=ServerLimits(queue_timeout_s=0.3))
    with serving(app) as base, httpx.Client(base_url=base, timeout=30) as c:
        busy = app.state.worker.scheduler.call(time.sleep, 1.5)  # the model thread is held past the timeout
        err = assert_error(c.post("/v1/completions", json={"prompt": ["a", "b", "c", "d", "e"], "max_tokens": 4}),
                           503)
        busy.result(timeout=10)
        assert err["code"] == "queue_timeout"
        assert _metrics(base)["pure_transformer_queue_timeouts_total"] == 1
        assert c.get("/health").json()["waiting_requests"] == 0
