"""Benchmark: tokenise and tokenise+pack throughput on one CPU core.

Trains (or loads, ``--tokenizer DIR``) a byte-level BPE on the bundled offline
corpus (or ``--inputs``), repeats that text until at least ``--min-tokens``
tokens are in play, then times on a single core, in one process:

* HF ``tokenizers`` ``encode_batch`` (rayon pinned to one thread) and ``encode``;
* tiktoken built from the same merges: ``encode_ordinary_batch(num_threads=1)``
  and ``Tokenizer.encode_batch`` (a plain ``encode_ordinary`` loop);
* tokenise+pack: ``pure_transformer.data.packing.pack_texts`` cutting the EOT-
  separated stream into blocks of ``--seq-len + 1`` tokens.

It also checks that both backends give identical ids on every distinct document.
Not a test; run it by hand:

    .venv/bin/python bench/bench_tokenize.py --vocab-size 50304
"""

from __future__ import annotations

import os

# Must be set before tokenizers is imported: its rayon pool is sized at first use.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import torch  # noqa: E402

from pure_transformer.bundled.synthetic import training_texts  # noqa: E402
from pure_transformer.data.packing import pack_texts  # noqa: E402
from pure_transformer.tokenizer.bpe import (  # noqa: E402
    DEFAULT_VOCAB_SIZE,
    Tokenizer,
    iter_training_texts,
    train_tokenizer,
)


@dataclass
class Result:
    name: str
    tokens: int
    wall_s: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.tokens / self.wall_s


def pin_to_one_core() -> str:
    """Restrict this process to one core, so 'per core' figures cannot borrow a second one."""
    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    return "not pinned (no sched_setaffinity on this platform)"


def timed(name: str, run: Callable[[], int]) -> Result:
    """Run ``run`` (which returns a token count) and time it in wall and CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    tokens = run()
    return Result(name, tokens, time.perf_counter() - wall, time.process_time() - cpu)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", help="load this tokenizer folder instead of training one")
    parser.add_argument(
        "--inputs", nargs="+", help="text to train on and measure (files, folders, globs); default: bundled corpus"
    )
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    parser.add_argument("--min-tokens", type=int, default=5_000_000, help="tokens to measure, at least")
    parser.add_argument("--seq-len", type=int, default=2048, help="packed blocks hold seq_len + 1 tokens")
    parser.add_argument("--batch-size", type=int, default=256, help="documents per encode_batch call")
    args = parser.parse_args()

    pinning = pin_to_one_core()
    corpus = list(iter_training_texts(args.inputs) if args.inputs else training_texts())

    if args.tokenizer:
        tok = Tokenizer.load(args.tokenizer)
        how = f"loaded {args.tokenizer}"
    else:
        out = tempfile.mkdtemp(prefix="bench_tok_")
        start = time.perf_counter()
        tok = train_tokenizer(corpus, args.vocab_size, out, show_progress=False)
        how = f"trained in {time.perf_counter() - start:.1f} s on {len(corpus)} docs -> {out}"
    if tok.backend != "tiktoken":
        raise SystemExit(f"tiktoken fast path unavailable for this tokenizer (backend={tok.backend})")

    # The bundled corpus is small: repeat it so every measurement covers >= min_tokens.
    corpus_tokens = sum(len(ids) for ids in tok.encode_batch(corpus))
    repeats = -(-args.min_tokens // corpus_tokens)
    texts = corpus * repeats
    batches = [texts[i : i + args.batch_size] for i in range(0, len(texts), args.batch_size)]
    hf = tok.hf

    print(f"cpu: {cpu_model()} ({os.cpu_count()} cores visible, {pinning})")
    print(f"tokenizer: vocab {tok.vocab_size}, {how}")
    print(f"text: {' '.join(args.inputs) if args.inputs else 'bundled corpus'}")
    print(f"workload: {len(corpus)} docs x {repeats} = {len(texts)} docs, {corpus_tokens * repeats:,} tokens")

    # Results are counted, not kept: holding millions of Python ints would put
    # garbage-collector time into whichever measurement happens to run last.
    def hf_batch() -> int:
        return sum(len(e.ids) for b in batches for e in hf.encode_batch(b, add_special_tokens=False))

    def hf_single() -> int:
        return sum(len(hf.encode(t, add_special_tokens=False).ids) for t in texts)

    def tiktoken_batch_pool() -> int:
        enc = tok.tiktoken_encoding  # the raw Encoding, to time tiktoken's own batch API
        assert enc is not None
        return sum(len(ids) for b in batches for ids in enc.encode_ordinary_batch(b, num_threads=1))

    def tiktoken_batch() -> int:
        return sum(len(ids) for b in batches for ids in tok.encode_batch(b))

    def tokenise_and_pack() -> int:
        return sum(len(block.tokens) for block in pack_texts(texts, tok, args.seq_len, args.batch_size))

    results = [
        timed("HF tokenizers encode_batch (1 thread)", hf_batch),
        timed("HF tokenizers encode (loop)", hf_single),
        timed("tiktoken encode_ordinary_batch(num_threads=1)", tiktoken_batch_pool),
        timed("tiktoken Tokenizer.encode_batch (encode_ordinary loop)", tiktoken_batch),
        timed(f"tokenise+pack (tiktoken, blocks of {args.seq_len + 1}, EOTs counted)", tokenise_and_pack),
    ]
    # One copy of the corpus is enough for the equality check: the repeats are identical.
    hf_ids = [e.ids for e in hf.encode_batch(corpus, add_special_tokens=False)]
    mismatches = sum(a != b for a, b in zip(hf_ids, tok.encode_batch(corpus)))

    base = results[0].rate
    print(f"\n{'path':58s} {'tokens':>11s} {'wall s':>7s} {'cpu s':>7s} {'Mtok/s':>7s} {'vs HF':>6s}")
    for r in results:
        figures = f"{r.tokens:>11,d} {r.wall_s:7.2f} {r.cpu_s:7.2f} {r.rate / 1e6:7.2f} {r.rate / base:5.1f}x"
        print(f"{r.name:58s} {figures}")
    print(f"\nidentical ids HF vs tiktoken: {len(corpus) - mismatches}/{len(corpus)} distinct documents")
    pack = results[-1].rate / 1e6
    print(f"tokenise+pack target >= 1.00 Mtok/s per core: {'MET' if pack >= 1 else 'MISSED'} ({pack:.2f})")


if __name__ == "__main__":
    main()
