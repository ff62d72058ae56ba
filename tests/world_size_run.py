"""Helper of test_resume_world_size.py (not a test module): one pretraining run, in this process or as a
torchrun rank, that records every training row the model is given.

Documents are made of word-level tokens that are their own id (``w123`` -> 123), so a row's tokens say
which documents it holds; a forward pre-hook on the model (not on the loader under test) records the
full packed block of each micro-batch, ``input_ids`` plus the last label.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from pure_transformer.config.overrides import apply_overrides
from pure_transformer.config.pretrain import PretrainConfig
from pure_transformer.model.config import model_preset
from pure_transformer.model.transformer import build_model
from pure_transformer.train.pretrain import pretrain

VOCAB = 1024
SEQ = 32
MODEL = model_preset("tiny").replace(vocab_size=VOCAB, dim=64, n_layers=2, n_heads=4, ffn_dim=128, max_seq_len=SEQ)


def doc_lengths() -> dict[int, int]:
    """Training document id -> its number of tokens (each token of document i is i)."""
    return {i: (i % 7) + 3 for i in range(2, VOCAB)}


def write_data(folder: Path) -> Path:
    """``ids_train.jsonl`` (one pass is ~6,000 tokens: a run of 2,048 never wraps) and a validation sibling."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|endoftext|>": 0, "<|pad|>": 1, **{f"w{i}": i for i in range(2, VOCAB)}}
    hf = Tokenizer(models.WordLevel(vocab, unk_token="<|pad|>"))
    hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf.add_special_tokens(["<|endoftext|>", "<|pad|>"])
    hf.save(str(folder / "tokenizer.json"))
    lines = [{"text": " ".join([f"w{i}"] * n)} for i, n in doc_lengths().items()]
    (folder / "ids_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    val = [{"text": " ".join(f"w{(7 * i + 3 * j) % (VOCAB - 2) + 2}" for j in range(5 + i % 11))} for i in range(80)]
    (folder / "ids_validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in val))
    return folder


def config(data: Path, **changes: object) -> PretrainConfig:
    """256 tokens a step (1 rank: 2 micro-batches of 4 x 32; 2 ranks: 1 each), 8 steps, 4 logical shards."""
    base = dict(model="tiny", tokenizer=str(data / "tokenizer.json"), sources={str(data / "ids_train.jsonl"): 1.0},
                shuffle_buffer=32, seq_len=SEQ, micro_batch=4, global_batch_tokens=256, total_tokens=256 * 8,
                warmup_tokens=256, peak_lr=3e-3, min_lr=3e-4, log_every=1, val_every=4, ckpt_every=4,
                val_tokens=11 * (SEQ + 1), num_workers=0, data_shards=4, deterministic=True, seed=7)
    base.update(changes)
    return apply_overrides(PretrainConfig(), base)


def run(cfg: PretrainConfig, run_dir: Path, out: Path, **kw: object) -> None:
    """Pretrain and write this rank's rows, in the order the model saw them, to ``out/rows_RANK.json``."""
    rows: list[list[int]] = []

    def record(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        if module.training:  # validation forwards are not training documents
            x, y = args[0], args[1]
            rows.extend(torch.cat([x, y[:, -1:]], dim=1).tolist())

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and in every run
    model = build_model(MODEL)
    model.register_forward_pre_hook(record, with_kwargs=True)
    pretrain(cfg, run_dir, model=model, progress=False, **kw)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rows_{os.environ.get('RANK', '0')}.json").write_text(json.dumps(rows))


if __name__ == "__main__":  # torchrun ... world_size_run.py DATA RUN_DIR OUT [stop_at_step | resume] [key=value ...]
    data, run_dir, out, how, *sets = sys.argv[1:]
    changes = {k: json.loads(v) for k, v in (s.split("=", 1) for s in sets)}
    run(config(Path(data), **changes), Path(run_dir), Path(out),
        **({"resume": "auto"} if how == "resume" else {"stop_at_step": int(how)} if how != "none" else {}))
