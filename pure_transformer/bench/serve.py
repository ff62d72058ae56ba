"""``pure-transformer bench serve``: a load generator against running servers.

    pure-transformer bench serve --url http://127.0.0.1:8000 [--baseline [NAME=]http://127.0.0.1:8001 ...] \\
        --clients 1,8,32,64 --requests-per-client 4 --stream-share 0.25 [--shared-prefix 120] [--profile]

For each client count, that many clients each send ``--requests-per-client``
completions back to back (a closed loop, no retries, one connection each). The
requests are drawn once from ``--seed`` with mixed sampling parameters (greedy and
sampled temperatures, top-p, some seeded, ``n`` of 1 or 2) and a ``--stream-share``
of streams, so every server gets the very same requests. With ``--baseline`` (once or
more: another build of ours, vLLM, transformers serve) the servers take turns level by
level (new, old, old, new, ...), so load from other processes hits all alike. Each body
names the server's first ``/v1/models`` id. Each server is first probed with one short
request per feature of the mix (:data:`FEATURES`: greedy decoding, ``n`` > 1 with greedy,
which vLLM refuses, ``n`` > 1, ``seed``, ``top_p``, streams with usage); a feature any server
refuses or ignores (fewer choices than ``n``; greedy answers that differ, as from a server
that samples anyway) is left out of the mix for all of them, and the output says which.
``--sequential N`` also sends the requests of the N-client level from one client, one after another.

Reported per server and level: requests served / sent (anything but 200 counts as
not served), requests/s, generated tokens/s (the servers' own ``usage`` counts),
p50/p95 time to first token (streams: the first text chunk; a non-streaming
request's first token is unobservable, so its whole latency stands in) and p50/p95
latency.

``--profile`` also reads the new server's ``/metrics`` before and after each of its levels and
prints where its model thread's time went (``pure_transformer_model_thread_seconds_total``:
joining rows, sampling, per-row work, the forward) and the rest of the wall time, when the model
thread waited for requests or for the GIL (the event loop: HTTP, JSON, streams' detokenising).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

PROMPTS = ["Question: a patient has fever and a rash. What is the most likely cause?", "The heart pumps",
           "Patients with type 2 diabetes often", "Blood pressure is measured", "Answer briefly: what is anemia?",
           "The liver", "Symptoms of dehydration include", "A 45-year-old man presents with chest pain"]


@dataclass
class Outcome:
    status: int
    latency_s: float
    first_s: float
    tokens: int


@dataclass
class Level:
    server: str
    clients: str
    sent: int
    wall_s: float
    outcomes: list[Outcome] = field(default_factory=list)
    phases: dict[str, float] | None = None
    """With ``--profile``: the server's model-thread seconds by phase during the level, and ``steps``."""

    def row(self) -> list[str]:
        ok = [o for o in self.outcomes if o.status == 200]
        tokens = sum(o.tokens for o in ok)

        def pct(values: list[float], q: float) -> str:
            if not values:
                return "-"
            values = sorted(values)
            return f"{values[min(len(values) - 1, int(q * len(values)))]:.3f}"

        first, latency = [o.first_s for o in ok], [o.latency_s for o in ok]
        failed = sorted({o.status for o in self.outcomes if o.status != 200})
        served = f"{len(ok)}/{self.sent}" + (f" (got {', '.join(map(str, failed))})" if failed else "")
        return [self.clients, self.server, served, f"{len(ok) / self.wall_s:.2f}",
                f"{tokens / self.wall_s:.1f}", pct(first, 0.5), pct(first, 0.95), pct(latency, 0.5),
                pct(latency, 0.95)]


HEADER = ["clients", "server", "served", "req/s", "gen tok/s", "TTFT p50 s", "TTFT p95 s", "latency p50 s",
          "latency p95 s"]


def requests_for(count: int, rng: random.Random, *, max_tokens: int, stream_share: float) -> list[dict]:
    """``count`` completion bodies with mixed sampling parameters."""
    out = []
    for i in range(count):
        temperature = rng.choice([0.0, 0.7, 1.0, 1.2])
        body: dict[str, Any] = {"prompt": f"{rng.choice(PROMPTS)} ({i})", "max_tokens": rng.choice(
            [max_tokens // 2, max_tokens]), "temperature": temperature, "top_p": rng.choice([1.0, 0.9, 0.5]),
            "n": rng.choice([1, 1, 1, 2])}
        if rng.random() < 0.5:
            body["seed"] = rng.randrange(2**31)
        if rng.random() < stream_share:
            body.update(stream=True, n=1, stream_options={"include_usage": True})
        out.append(body)
    return out


async def one(client: Any, body: dict) -> Outcome:
    start = time.perf_counter()
    try:
        if not body.get("stream"):
            r = await client.post("/v1/completions", json=body)
            elapsed = time.perf_counter() - start
            tokens = r.json()["usage"]["completion_tokens"] if r.status_code == 200 else 0
            return Outcome(r.status_code, elapsed, elapsed, tokens)
        first, tokens = None, 0
        async with client.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                return Outcome(r.status_code, time.perf_counter() - start, 0.0, 0)
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    return Outcome(500, time.perf_counter() - start, 0.0, 0)
                if first is None and event["choices"] and event["choices"][0].get("text"):
                    first = time.perf_counter() - start
                if event.get("usage"):
                    tokens = event["usage"]["completion_tokens"]
        elapsed = time.perf_counter() - start
        return Outcome(200, elapsed, elapsed if first is None else first, tokens)
    except Exception:  # noqa: BLE001 - a dropped connection or timeout is an unserved request, not a crash
        return Outcome(0, time.perf_counter() - start, 0.0, 0)


async def run_level(url: str, name: str, bodies: list[list[dict]], api_key: str | None, timeout_s: float) -> Level:
    """One client per list in ``bodies``, each sending its requests one after another."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=len(bodies) + 1, max_keepalive_connections=len(bodies) + 1)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, headers=headers, limits=limits,
                                 transport=httpx.AsyncHTTPTransport(retries=0, limits=limits)) as client:

        async def loop(mine: list[dict]) -> list[Outcome]:
            return [await one(client, b) for b in mine]

        start = time.perf_counter()
        results = await asyncio.gather(*(loop(mine) for mine in bodies))
        wall = time.perf_counter() - start
    level = Level(name, str(len(bodies)), sum(map(len, bodies)), wall)
    level.outcomes = [o for r in results for o in r]
    return level


def model_thread_seconds(url: str, api_key: str | None = None) -> dict[str, float]:
    """The server's cumulative model-thread seconds by phase, and its decode ``steps``, from ``/metrics``."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=30).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "pure_transformer_model_thread_seconds_total":
                out[sample.labels["phase"]] = sample.value
            elif sample.name == "pure_transformer_batch_rows_count":
                out["steps"] = sample.value
    return out


WORDS = ("patient", "history", "fever", "cough", "pain", "blood", "pressure", "heart", "liver", "kidney", "dose",
         "symptom", "chronic", "acute", "treatment", "diagnosis", "review", "note", "the", "with", "and", "of")


def prefixed(bodies: list[dict], words: int, rng: random.Random, shared: bool) -> list[dict]:
    """``bodies`` with a ``words``-word preamble before each prompt: one preamble for all (a system
    or few-shot prefix every request repeats), or a different one of the same length for each."""
    def preamble() -> str:
        return "Context: " + " ".join(rng.choice(WORDS) for _ in range(words)) + ".\n\n"

    common = preamble()
    return [{**b, "prompt": (common if shared else preamble()) + b["prompt"]} for b in bodies]


FEATURES: dict[str, tuple[dict, str]] = {
    # name: (a probe body's extra fields, how the mix leaves the feature out when a server refuses it)
    "greedy": ({"temperature": 0.0, "max_tokens": 8}, "greedy requests sample at temperature 0.7"),
    "n > 1 with greedy": ({"n": 2, "temperature": 0.0}, "greedy requests ask n = 1"),
    "n > 1": ({"n": 2, "temperature": 1.0}, "every request asks n = 1"),
    "seed": ({"seed": 1, "temperature": 1.0}, "no request sends a seed"),
    "top_p": ({"top_p": 0.5, "temperature": 1.0}, "no request sends top_p"),
    "stream": ({"stream": True, "stream_options": {"include_usage": True}}, "no request streams"),
}


def refused_features(url: str, api_key: str | None = None, model: str | None = None) -> list[str]:
    """The :data:`FEATURES` a server refuses (anything but 200) or ignores: fewer choices than ``n``,
    or greedy requests whose two answers differ (a server that samples anyway)."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    refused = []
    with httpx.Client(base_url=url, headers=headers, timeout=120) as c:
        for name, (extra, _) in FEATURES.items():
            body = {"prompt": "The heart", "max_tokens": 2, **({"model": model} if model else {}), **extra}
            answers = [c.post("/v1/completions", json=body) for _ in range(2 if name == "greedy" else 1)]
            if any(r.status_code != 200 for r in answers):
                refused.append(name)
            elif not body.get("stream") and len(answers[0].json()["choices"]) != body.get("n", 1):
                refused.append(name)
            elif name == "greedy" and len({r.json()["choices"][0]["text"] for r in answers}) > 1:
                refused.append(name)
    return refused


def without(bodies: list[dict], refused: list[str]) -> list[dict]:
    """The mix with the refused features left out (for every server alike)."""
    out = []
    for b in bodies:
        b = dict(b)
        if "greedy" in refused and b["temperature"] == 0:
            b["temperature"] = 0.7
        if "n > 1" in refused or ("n > 1 with greedy" in refused and b["temperature"] == 0):
            b["n"] = 1
        if "seed" in refused:
            b.pop("seed", None)
        if "top_p" in refused:
            b.pop("top_p", None)
        if "stream" in refused:
            b.pop("stream", None), b.pop("stream_options", None)
        out.append(b)
    return out


def served_model(url: str, api_key: str | None = None) -> str | None:
    """The first model id of ``/v1/models`` (servers such as vLLM and transformers serve want it in each body)."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.get(f"{url}/v1/models", headers=headers, timeout=30)
        return r.json()["data"][0]["id"] if r.status_code == 200 and r.json().get("data") else None
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def bench_serve(servers: dict[str, str], clients: list[int], *, per_client: int, stream_share: float,
                max_tokens: int, seed: int, sequential: int | None, api_key: str | None = None,
                timeout_s: float = 600.0, say: Any = print, profile: bool = False, shared_prefix: int = 0,
                refused: list[str] | None = None) -> list[Level]:
    """Every level against every server, in alternating order; returns the measured levels.

    ``shared_prefix`` > 0 adds two levels at the largest client count: every prompt after one
    preamble of that many words, and after a different preamble of the same length each (what
    prefix reuse saves is their difference). ``refused`` features are left out of every level's mix."""
    rng = random.Random(seed)
    plan: list[tuple[str, list[list[dict]]]] = []
    for c in clients:
        bodies = without(requests_for(c * per_client, rng, max_tokens=max_tokens, stream_share=stream_share),
                         refused or [])
        plan.append((str(c), [bodies[i::c] for i in range(c)]))
        if sequential == c:
            plan.append((f"1 (the {c}-client requests in sequence)", [bodies]))
    if shared_prefix:
        c = max(clients)
        bodies = without(requests_for(c * per_client, rng, max_tokens=max_tokens, stream_share=stream_share),
                         refused or [])
        for shared in (True, False):
            mine = prefixed(bodies, shared_prefix, rng, shared)
            kind = "one shared" if shared else "distinct"
            label = f"{c} ({kind} {shared_prefix}-word prefix{'' if shared else 'es'})"
            plan.append((label, [mine[i::c] for i in range(c)]))
    models = {name: served_model(url, api_key) for name, url in servers.items()}
    levels = []
    for k, (label, bodies) in enumerate(plan):
        measured = {}
        for name in list(servers) if k % 2 == 0 else list(servers)[::-1]:
            before = model_thread_seconds(servers[name], api_key) if profile and name == "new" else None
            named = [[{**b, "model": models[name]} if models[name] else b for b in mine] for mine in bodies]
            measured[name] = level = asyncio.run(run_level(servers[name], name, named, api_key, timeout_s))
            if before is not None:
                after = model_thread_seconds(servers[name], api_key)
                level.phases = {k: after[k] - before.get(k, 0.0) for k in after}
            level.clients = label
            say(f"  {label} clients, {name}: {len(level.outcomes)} requests in {level.wall_s:.1f} s", file=sys.stderr)
        levels += [measured[name] for name in servers]  # the table lists the servers in one order
    return levels


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="the server to measure, e.g. http://127.0.0.1:8000")
    p.add_argument("--baseline", action="append", metavar="URL",
                   help="another server, measured in the same run, as URL or NAME=URL; repeat for several "
                        "(e.g. --baseline vllm=http://127.0.0.1:8102 --baseline hf=http://127.0.0.1:8103)")
    p.add_argument("--clients", default="1,8,32,64", help="comma-separated concurrent client counts")
    p.add_argument("--requests-per-client", type=int, default=4, help="requests each client sends in turn")
    p.add_argument("--stream-share", type=float, default=0.25, help="share of requests that stream (0..1)")
    p.add_argument("--max-tokens", type=int, default=32, help="max_tokens of a request (half of them ask half)")
    p.add_argument("--sequential", type=int, default=None, metavar="N",
                   help="also send the N-client level's requests from one client, one after another")
    p.add_argument("--seed", type=int, default=0, help="draws the requests")
    p.add_argument("--api-key", default=None, help="sent as 'Authorization: Bearer KEY' to both servers")
    p.add_argument("--shared-prefix", type=int, default=0, metavar="WORDS",
                   help="add two levels at the largest client count: prompts after one shared WORDS-word preamble, "
                        "and after a distinct one each (what prefix reuse saves)")
    p.add_argument("--profile", action="store_true",
                   help="also print where the new server's model thread spent each level (from its /metrics)")


def run(args: argparse.Namespace) -> None:
    from ..errors import ConfigError

    try:
        clients = [int(c) for c in args.clients.split(",")]
    except ValueError:
        raise ConfigError(f"--clients takes comma-separated integers, got {args.clients!r}") from None
    if any(c < 1 for c in clients) or args.requests_per_client < 1 or args.max_tokens < 2:
        raise ConfigError("--clients, --requests-per-client must be >= 1 and --max-tokens >= 2")
    if not 0 <= args.stream_share <= 1:
        raise ConfigError(f"--stream-share must be in 0..1, got {args.stream_share}")
    servers = {"new": args.url}
    for k, given in enumerate(args.baseline or []):
        name, _, url = given.rpartition("=") if "=" in given.split("://")[0] else ("", "", given)
        servers[name or ("baseline" if len(args.baseline) == 1 else f"baseline {k + 1}")] = url
    print(f"command: {shlex.join(['pure-transformer', *sys.argv[1:]])}")
    refused = sorted({f for name, url in servers.items() for f in refused_features(url, args.api_key,
                                                                                   served_model(url, args.api_key))})
    for name, url in servers.items():
        print(f"{name}: {url} (model {served_model(url, args.api_key)})")
    if refused:
        print("left out of the mix, refused by a server: " + "; ".join(f"{f} ({FEATURES[f][1]})" for f in refused))
    if hasattr(os, "getloadavg"):
        print(f"client machine: {os.cpu_count()} CPUs, load average (1, 5, 15 min): "
              + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    levels = bench_serve(servers, clients, per_client=args.requests_per_client, stream_share=args.stream_share,
                         max_tokens=args.max_tokens, seed=args.seed, sequential=args.sequential,
                         api_key=args.api_key, profile=args.profile, shared_prefix=args.shared_prefix,
                         refused=refused)
    print(markdown_table(levels))
    if args.profile:
        print()
        print(profile_table(levels))


def markdown_table(levels: list[Level]) -> str:
    """The levels as a markdown table, in the order measured."""
    rows = [lv.row() for lv in levels]
    align = ["---"] * 2 + ["---:"] * (len(HEADER) - 2)
    return "\n".join("| " + " | ".join(r) + " |" for r in [HEADER, align, *rows])


PROFILE_HEADER = ["clients", "decode steps", "wall s", "join", "sampling", "rows", "forward", "model thread idle"]


def profile_table(levels: list[Level]) -> str:
    """Each profiled level's wall time split by model-thread phase, as a share of the wall and in ms per
    decode step; "idle" is the rest (waiting for requests, or for the GIL while the event loop ran)."""
    rows = []
    for lv in levels:
        if lv.phases is None:
            continue
        steps = max(lv.phases.get("steps", 0.0), 1.0)
        parts = {k: lv.phases.get(k, 0.0) for k in ("join", "sampling", "rows", "forward")}
        parts["idle"] = max(0.0, lv.wall_s - sum(parts.values()))
        rows.append([lv.clients, f"{steps:.0f}", f"{lv.wall_s:.2f}", *(
            f"{100 * v / lv.wall_s:.0f}% ({1000 * v / steps:.2f} ms)" for v in parts.values())])
    align = ["---"] + ["---:"] * (len(PROFILE_HEADER) - 1)
    return "\n".join("| " + " | ".join(r) + " |" for r in [PROFILE_HEADER, align, *rows])
