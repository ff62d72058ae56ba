"""The running batch as a pool of rows: in a crowd of 64 mixed requests, many sharing prefixes (so
rows join from held prefixes, leave at once and reuse freed rows), every greedy and seeded request
gets exactly the tokens ``Engine.generate`` gives it alone; the pool's growth and its split prefill
keep what rows hold."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from pure_transformer.inference.engine import Engine, SamplingParams, decode_step, prefill
from pure_transformer.inference.row_pool import RowPool

PREAMBLES = ["Context: the patient has a fever, a cough and chest pain since two days.\n\n",
             "Few-shot: Q: what is anemia? A: too few red cells. Q: what is a rash? A:"]


def _bodies(count: int) -> list[dict]:
    rng = random.Random(7)
    out = []
    for i in range(count):
        prompt = (rng.choice(PREAMBLES) if i % 3 else "") + rng.choice(["The heart", "Blood pressure", "A"]) + f" {i}"
        greedy = i % 2 == 0
        body = {"prompt": prompt, "max_tokens": rng.choice([4, 9, 17]), "n": 1 if greedy else rng.choice([1, 2, 3]),
                "temperature": 0.0 if greedy else rng.choice([0.7, 1.0, 1.3]), "stream": i % 5 == 0}
        if not greedy:
            body.update(seed=rng.randrange(1000), top_p=rng.choice([1.0, 0.9, 0.5]))
        if body["stream"]:
            body["n"] = 1
        out.append(body)
    return out


def _send(base: str, body: dict) -> list[str]:
    with httpx.Client(base_url=base, timeout=120) as c:
        if body.get("stream"):
            text = ""
            with c.stream("POST", "/v1/completions", json=body) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        choices = json.loads(line[6:])["choices"]
                        text += choices[0]["text"] if choices else ""
            return [text]
        r = c.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        return [ch["text"] for ch in r.json()["choices"]]


def test_a_crowd_of_64_mixed_requests_each_gets_what_it_gets_alone(url, tiny_model, tiny_tokenizer):
    bodies = _bodies(64)
    with ThreadPoolExecutor(64) as pool:
        got = list(pool.map(lambda b: _send(url, b), bodies))
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    reused = next(line for line in metrics.splitlines()
                  if line.startswith("pure_transformer_prefix_reused_tokens_total"))
    assert float(reused.split()[-1]) > 0  # rows did start from held prefixes
    engine = Engine(tiny_model, tiny_tokenizer)
    for body, texts in zip(bodies, got):
        ids = [tiny_tokenizer.eot_id] + tiny_tokenizer.encode(body["prompt"])
        params = SamplingParams(max_new_tokens=body["max_tokens"], temperature=body["temperature"],
                                top_p=body.get("top_p", 1.0), seed=body.get("seed"))
        alone = engine.generate([ids], params, body["n"])[0]
        assert texts == [s.text for s in alone], body


@pytest.mark.fast
def test_growing_the_pool_keeps_what_rows_hold(tiny_model):
    pool = RowPool(tiny_model, 4, 0, torch.float32)
    a, b = [5, 6, 7, 8, 9], [3, 4, 5]
    with torch.no_grad():
        (ra,), = pool.join([a], [1], 20)
        small = pool.kv.capacity
        (rb,), = pool.join([b], [1], 200)  # a longer row: the pool grows, row a is copied over
        assert pool.kv.capacity > small and pool.kv.held[ra] == len(a) and pool.kv.ids[ra] == a
        pool.decode({ra: 11, rb: 12}, decode_step)
        for p, r, t in ((a, ra, 11), (b, rb, 12)):
            cache, _ = prefill(tiny_model, [p], 20, torch.float32)
            torch.testing.assert_close(pool.logits[r], decode_step(tiny_model, torch.tensor([t]), cache)[0],
                                       atol=1e-5, rtol=1e-5)


@pytest.mark.fast
def test_prefills_whose_padding_would_pass_the_context_run_one_by_one(tiny_model):
    # A row resuming from a 240-token held prefix and a fresh 30-token prompt: padded together, the short
    # suffix's row would take positions past the 256-token context, so each is prefilled alone.
    long_prompt = [(7 * i) % 500 + 1 for i in range(240)]
    pool = RowPool(tiny_model, 4, 0, torch.float32)
    with torch.no_grad():
        pool.join([long_prompt[:-1]], [1], 250)
        pool.free(0)  # finished: its slots stay, held for reuse
        fresh = [(3 * i) % 400 + 2 for i in range(30)]
        rows = pool.join([long_prompt + [9], fresh], [1, 1], 250)
        assert pool.reused_tokens == 239
        for p, (r,) in zip((long_prompt + [9], fresh), rows):
            _, last = prefill(tiny_model, [p], len(p) + 1, torch.float32)
            torch.testing.assert_close(pool.logits[r], last[0, -1], atol=1e-4, rtol=1e-4)
