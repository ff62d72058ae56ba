"""Fixtures of the server tests: a tiny random model behind uvicorn on 127.0.0.1
(port 0) in a background thread, and an httpx client for it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from pure_transformer.model.config import ModelConfig
from pure_transformer.model.transformer import build_model
from pure_transformer.serving.app import create_app
from pure_transformer.serving.schemas import ServerLimits


@pytest.fixture(scope="module")
def tiny_model():
    import torch

    torch.manual_seed(0)
    return build_model(ModelConfig(vocab_size=512, dim=64, n_layers=2, n_heads=4, ffn_dim=128, max_seq_len=256))


@pytest.fixture(scope="module")
def url(tiny_model, tiny_tokenizer, serving) -> Iterator[str]:
    app = create_app(tiny_model, tiny_tokenizer, model_name="tiny", limits=ServerLimits())
    with serving(app) as base:
        yield base


@pytest.fixture
def client(url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as c:
        yield c
