"""The checkpoint the serving benchmarks use: a random ``tiny`` model (seed 0, 1.38M parameters,
256-token context) with the 4,096-token BPE trained on the bundled corpus, so rows rarely stop
early at end-of-text. ``--context`` widens the context (RoPE tables only: the weights do not
depend on it), for prompts such as ``bench serve --shared-prefix 300``'s 400-token preamble.

    python bench/make_serve_checkpoint.py /tmp/serve-ckpt   # then: pure-transformer serve --checkpoint /tmp/serve-ckpt
    python bench/make_serve_checkpoint.py /tmp/serve-ckpt-1k --context 1024
"""

from __future__ import annotations

import argparse

import torch

from pure_transformer.bench.common import bundled_tokenizer
from pure_transformer.checkpoint.store import save_checkpoint
from pure_transformer.model.config import model_preset
from pure_transformer.model.transformer import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="checkpoint folder to write")
    ap.add_argument("--context", type=int, default=None, help="max_seq_len (default the tiny preset's 256)")
    args = ap.parse_args()
    torch.manual_seed(0)
    tok = bundled_tokenizer(4096)
    cfg = model_preset("tiny")
    model = build_model(cfg.replace(vocab_size=max(cfg.vocab_size, tok.vocab_size),
                                    max_seq_len=args.context or cfg.max_seq_len))
    meta = {"kind": "pretrain", "step": 0, "model_config": model.cfg.to_dict(), "tokenizer": "tokenizer.json"}
    print(save_checkpoint(args.out, model, meta, files={"tokenizer.json": tok.hf.to_str()}))


if __name__ == "__main__":
    main()
