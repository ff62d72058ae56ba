"""Checks the server tests share: OpenAI-shaped errors, server-sent events, an MCQ body."""

from __future__ import annotations

import json

import httpx

MCQ_BODY = {"question": "Which vitamin deficiency causes scurvy?",
            "options": {"A": "Vitamin A", "B": "Vitamin B12", "C": "Vitamin C", "D": "Vitamin D"}}


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
