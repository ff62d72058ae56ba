"""Shared fixtures: the bundled offline corpus on disk and a tiny trained tokenizer.

``serving`` runs an app behind a real socket. The data fixtures are session-scoped
because they cost a second or two to build and every data test needs them.
``write_jsonl`` is a helper fixture for tests that need their own small files.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def bundled():
    """The in-memory bundled corpus (seed 0), as the bundled-* sources see it."""
    from pure_transformer.bundled.synthetic import bundled_corpus

    return bundled_corpus(seed=0)


@pytest.fixture(scope="session")
def bundled_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled corpus written as files: general.jsonl, medical.jsonl, medqa_{train,validation,test}.jsonl."""
    from pure_transformer.bundled.synthetic import write_bundled

    out = tmp_path_factory.mktemp("bundled")
    write_bundled(out, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory, bundled):
    """A 512-token byte-level BPE trained on the bundled text (fast to train, real merges)."""
    from pure_transformer.answer_format import AnswerFormat
    from pure_transformer.tokenizer import train_tokenizer

    texts = bundled.general + bundled.medical + [AnswerFormat.LETTER.pretrain_text(m) for m in bundled.mcq["train"]]
    return train_tokenizer(texts, 512, tmp_path_factory.mktemp("tok"), show_progress=False)


@pytest.fixture
def write_jsonl() -> Callable[[Path, Iterable[dict[str, Any]]], Path]:
    """Write records as JSON lines to a path (parents created); returns the path."""

    def write(path: Path, records: Iterable[dict[str, Any]]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
        return path

    return write


@contextmanager
def _serving(app: Any, **config: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port (``config``: more uvicorn.Config
    settings); yields the base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                           **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not (server.started and server.servers):
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn exited during startup"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def serving() -> Callable[[Any], Any]:
    """``with serving(app) as url:`` runs an ASGI app with uvicorn on a free loopback port."""
    return _serving
