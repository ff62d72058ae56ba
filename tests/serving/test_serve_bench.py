"""``bench serve`` against several servers: features a server refuses are left out of the mix for all,
each body names the server's model, and the shared-prefix levels send the same requests after one
preamble or distinct ones; our server's prefix reuse skips the shared preamble's prefill."""

from __future__ import annotations

import random

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from pure_transformer.bench.serve import (FEATURES, bench_serve, prefixed, refused_features, requests_for,
                                          served_model, without)


def _picky_server(seen: list[dict]) -> FastAPI:
    """A stand-in for vLLM's completions endpoint: refuses n > 1 with greedy and wants its model named."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict:
        return {"data": [{"id": "picky"}]}

    @app.post("/v1/completions")
    async def completions(body: dict) -> JSONResponse:
        seen.append(body)
        if body.get("model") != "picky" or (body.get("n", 1) > 1 and body.get("temperature", 1.0) == 0):
            return JSONResponse({"error": {"message": "refused"}}, status_code=400)
        n = body.get("n", 1)
        return JSONResponse({"choices": [{"text": "x", "index": i} for i in range(n)],
                             "usage": {"completion_tokens": n}})

    return app


@pytest.mark.fast
def test_a_refused_feature_is_left_out_for_every_server(url, serving):
    assert refused_features(url) == []  # ours takes the whole mix
    seen: list[dict] = []
    with serving(_picky_server(seen)) as picky:
        assert served_model(picky) == "picky"
        refused = refused_features(picky, model="picky")
        assert refused == ["n > 1 with greedy"]
        seen.clear()
        levels = bench_serve({"new": url, "picky": picky}, [4], per_client=4, stream_share=0.0, max_tokens=4, seed=3,
                             sequential=None, say=lambda *a, **k: None, refused=refused)
    assert all(o.status == 200 for lv in levels for o in lv.outcomes)
    assert seen and all(b["model"] == "picky" and not (b["n"] > 1 and b["temperature"] == 0) for b in seen)
    assert any(b["n"] > 1 for b in seen)  # sampled requests still ask several samples


@pytest.mark.fast
def test_an_ignored_feature_counts_as_refused(serving):
    # A stand-in for transformers serve: answers 200 yet samples at temperature 0 and returns one choice for n.
    app, calls = FastAPI(), []

    @app.post("/v1/completions")
    async def completions(body: dict) -> dict:
        calls.append(body)
        return {"choices": [{"text": f"sampled {len(calls)}", "index": 0}], "usage": {"completion_tokens": 1}}

    with serving(app) as lazy:
        assert refused_features(lazy) == ["greedy", "n > 1 with greedy", "n > 1"]


@pytest.mark.fast
def test_without_leaves_out_only_what_was_refused():
    bodies = requests_for(200, random.Random(0), max_tokens=8, stream_share=0.5)
    assert any(b["n"] > 1 and b["temperature"] == 0 for b in bodies)
    kept = without(bodies, ["n > 1 with greedy"])
    assert [b["prompt"] for b in kept] == [b["prompt"] for b in bodies]
    assert not any(b["n"] > 1 and b["temperature"] == 0 for b in kept) and any(b["n"] > 1 for b in kept)
    bare = without(bodies, list(FEATURES))
    assert all(b["n"] == 1 and b["temperature"] > 0 and "seed" not in b and "top_p" not in b and "stream" not in b
               for b in bare)


@pytest.mark.fast
def test_prefixed_prompts_share_one_preamble_or_none():
    bodies = requests_for(6, random.Random(0), max_tokens=8, stream_share=0.0)
    shared = prefixed(bodies, 30, random.Random(1), shared=True)
    distinct = prefixed(bodies, 30, random.Random(1), shared=False)
    heads = {b["prompt"].split("\n\n")[0] for b in shared}
    assert len(heads) == 1 and len(next(iter(heads)).split()) == 31  # "Context:" + 30 words
    assert len({b["prompt"].split("\n\n")[0] for b in distinct}) == 6
    assert all(s["prompt"].endswith(b["prompt"]) for s, b in zip(shared, bodies))


def test_shared_prefix_level_reuses_the_preamble(tiny_model, tiny_tokenizer, serving):
    import asyncio

    from pure_transformer.bench.serve import run_level
    from pure_transformer.serving.app import create_app

    app = create_app(tiny_model, tiny_tokenizer, model_name="tiny")
    scheduler = app.state.worker.scheduler
    with serving(app) as base:
        levels = bench_serve({"new": base}, [4], per_client=2, stream_share=0.25, max_tokens=4, seed=0,
                             sequential=None, say=lambda *a, **k: None, shared_prefix=40)
        assert [lv.clients for lv in levels] == ["4", "4 (one shared 40-word prefix)", "4 (distinct 40-word prefixes)"]
        assert all(o.status == 200 for lv in levels for o in lv.outcomes)
        bodies = requests_for(8, random.Random(0), max_tokens=4, stream_share=0.0)
        reused = []
        for shared in (True, False):
            before = scheduler.prefix_reused_tokens
            mine = prefixed(bodies, 40, random.Random(2), shared)
            asyncio.run(run_level(base, "new", [mine[i::4] for i in range(4)], None, 60))
            reused.append(scheduler.prefix_reused_tokens - before)
    preamble = len(tiny_tokenizer.encode(mine[0]["prompt"].split("\n\n")[0]))
    assert reused[0] >= 7 * preamble  # every request but the first starts from the held preamble
    assert reused[1] < reused[0] / 4  # distinct preambles share little (a few words by chance)
