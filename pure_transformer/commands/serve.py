"""The ``serve`` command (``python -m pure_transformer.serve``): one checkpoint behind the
OpenAI-compatible app of :mod:`pure_transformer.serving.app`, under uvicorn.

    python -m pure_transformer.serve --checkpoint runs/rl [--port 8000] [--api-key KEY]

It binds to 127.0.0.1 unless ``--host`` says otherwise, and binds before loading the model,
so a taken port is one line at once. SIGTERM stops it cleanly (running requests get
``--shutdown-timeout`` seconds): it prints ``serve: stopped on SIGTERM`` and exits 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

import torch

from ..errors import ConfigError, UserError
from ..mcq.answer_format import AnswerFormat
from ..serving.app import create_app
from ..serving.http import openai_h11_protocol
from ..serving.schemas import ServerLimits


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="step folder or run folder (final, else the newest)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: local only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1/*")
    p.add_argument("--max-running-rows", type=int, default=ServerLimits.max_running_rows,
                   help="rows (prompt x sample) decoded together in the running batch")
    p.add_argument("--kv-cache-tokens", type=int, default=None, metavar="N",
                   help="KV-cache slots the running batch may hold (default: max-running-rows x the model context)")
    p.add_argument("--max-queue", type=int, default=ServerLimits.max_queue,
                   help="requests waiting to join the batch; past it a request gets 429")
    p.add_argument("--queue-timeout", type=float, default=ServerLimits.queue_timeout_s, metavar="S",
                   help="a request none of whose prompts joined the batch within this long gets 503")
    p.add_argument("--max-tokens", type=int, default=ServerLimits.max_tokens, help="cap on a request's max_tokens")
    p.add_argument("--shutdown-timeout", type=float, default=ServerLimits.shutdown_timeout_s, metavar="S",
                   help="on SIGTERM, seconds running requests may take to finish before the server exits")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--name", default=None, help="model id reported by the API (default: the checkpoint folder)")


def run(args: argparse.Namespace) -> None:
    import socket

    import uvicorn

    from ..checkpoint.store import load_model

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {args.port}")
    limits = ServerLimits(max_running_rows=args.max_running_rows, kv_cache_tokens=args.kv_cache_tokens,
                          max_queue=args.max_queue, queue_timeout_s=args.queue_timeout, max_tokens=args.max_tokens,
                          shutdown_timeout_s=args.shutdown_timeout)
    # Bind before loading the model: a taken port fails in a second, as one line, not after the load
    # (uvicorn itself would log the error and exit with its own status).
    try:
        sock = socket.create_server((args.host, args.port), family=socket.AF_INET6 if ":" in args.host
                                    else socket.AF_INET)
    except OSError as e:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    if args.api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host} without --api-key: anyone who can reach it can use it",
              file=sys.stderr)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok, meta, folder = load_model(args.checkpoint, device)
    name = args.name or f"{folder.parent.name}/{folder.name}"
    app = create_app(model, tok, model_name=name, api_key=args.api_key, limits=limits,
                     answer_format=AnswerFormat.of_checkpoint(meta))
    # Explicit limits below the app: idle keep-alive connections close after 5 s, and h11 refuses a
    # request head still incomplete after 16 KiB; what uvicorn rejects itself is answered in the
    # OpenAI error shape too (openai_h11_protocol).
    config = uvicorn.Config(app, log_level="info", timeout_keep_alive=5, h11_max_incomplete_event_size=16 * 1024,
                            http=openai_h11_protocol(), timeout_graceful_shutdown=limits.shutdown_timeout_s)
    server = uvicorn.Server(config)
    signals: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        signals.append(signum)
        server.should_exit = True  # a SIGTERM before uvicorn listens for it stops the server too

    # uvicorn catches SIGTERM itself, and once it has shut down it restores the handler it found and
    # raises the caught signal again into it. Found there must be this one, not the CLI's set-up
    # handler (cli._terminate: exit 143, "nothing was saved"), which would turn a clean stop into a kill.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main_thread else None
    try:
        server.run(sockets=[sock])
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if app.state.worker.busy():
        # The grace period is over and the model thread is still inside a forward pass: it cannot be
        # interrupted, and waiting for it is what made SIGTERM look ignored.
        print(f"serve: stopped after {limits.shutdown_timeout_s:g} s with a request still running", file=sys.stderr,
              flush=True)
        os._exit(0)
    if signals:
        print("serve: stopped on SIGTERM", file=sys.stderr, flush=True)
