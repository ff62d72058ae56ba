"""What the data pipeline produces, for people: decoded packed blocks, tokens per
source and the mixture actually achieved; and the n-gram overlap report.

These back ``pure-transformer data preview`` and ``pure-transformer data overlap``.
"""

from __future__ import annotations

import time
from itertools import islice

from ..mcq.answer_format import AnswerFormat, has_explanation
from ..tokenizer.bpe import Tokenizer
from .contamination import ngram_overlap
from .loader import build_train_loader, document_spans
from .mixing import MixtureConfig, parse_mixture
from .registry import load_mcqs, open_source, source_kind
from .sources import SourceKind, first_pass

DEFAULT_PREVIEW_MIXTURE = "bundled-general:0.5,bundled-medical:0.35,bundled-mcq:0.15"
"""The debug pretraining mixture: the offline stand-ins for FineWeb-Edu and MedQA."""


def preview(tokenizer: str, mixture: str | None = None, *, seq_len: int = 256, num_blocks: int = 200, show: int = 2,
            weight_by: str = "tokens", seed: int = 0, answer_format: AnswerFormat = AnswerFormat.LETTER,
            print_fn=print) -> dict:
    """Pack ``num_blocks`` rows of ``seq_len`` tokens from ``mixture``
    ("name:weight,..."), print ``show`` of them decoded (documents separated),
    then a per-source table of target versus achieved token shares.

    Returns the table as ``{source: {"target", "share", "tokens", "docs", "epoch"}}``
    plus ``"tokens_per_s"``. With the ``explain`` format it also counts, per MCQ
    source, the training records that have no explanation and so are written in
    the ``text`` form (``"no_explanation"``).
    """
    tok = Tokenizer.load(tokenizer)
    cfg = MixtureConfig(parse_mixture(mixture or DEFAULT_PREVIEW_MIXTURE), weight_by=weight_by,  # type: ignore[arg-type]
                        seed=seed, shuffle_buffer=1000, answer_format=answer_format)
    loader = build_train_loader(cfg, tok, seq_len=seq_len, batch_size=1, num_workers=0)
    start = time.perf_counter()
    shown = 0
    for batch in islice(loader, num_blocks):
        if shown < show:
            ids = batch["input_ids"][0]
            print_fn(f"=== block {shown} ({seq_len} tokens) ===")
            for n, (a, b) in enumerate(document_spans(batch["position_ids"][0])):
                print_fn(f"--- document piece {n} (tokens {a}..{b - 1}) ---")
                print_fn(tok.decode(ids[a:b].tolist()))
            shown += 1
    elapsed = time.perf_counter() - start
    stats = loader.stats()
    total = sum(s.tokens for s in stats)
    print_fn(f"\n{num_blocks} blocks x {seq_len} tokens = {total:,} tokens in {elapsed:.2f} s "
             f"({total / elapsed:,.0f} tokens/s); mixture weights count {weight_by}")
    print_fn(f"{'source':<28}{'target':>8}{'achieved':>10}{'tokens':>10}{'docs':>8}{'epoch':>7}")
    table: dict = {}
    for s in stats:
        print_fn(f"{s.name:<28}{s.target_share:>8.3f}{s.share:>10.3f}{s.tokens:>10,}{s.docs:>8,}{s.epoch:>7}")
        table[s.name] = {"target": s.target_share, "share": s.share, "tokens": s.tokens, "docs": s.docs,
                         "epoch": s.epoch}
    table["tokens_per_s"] = total / elapsed
    if answer_format is AnswerFormat.EXPLAIN:
        for s in stats:
            if source_kind(s.name) is SourceKind.MCQ:
                records = load_mcqs(s.name, "train")
                missing = sum(not has_explanation(m) for m in records)
                table[s.name]["no_explanation"] = missing
                print_fn(f"{s.name}: {missing:,} of {len(records):,} training questions have no explanation and are "
                         f"written in the text form (answer line only)")
    return table


def overlap(train: str, eval_source: str, *, eval_split: str = "test", n: int = 13, max_train_docs: int = 100_000,
            print_fn=print) -> dict:
    """n-gram overlap between the first ``max_train_docs`` training documents of
    ``train`` and one pass over ``eval_source``'s ``eval_split``."""
    eval_texts = [d.text for d in first_pass(open_source(eval_source, eval_split))]  # type: ignore[arg-type]
    train_texts = (d.text for d in first_pass(open_source(train, "train")))
    report = ngram_overlap(islice(train_texts, max_train_docs), eval_texts, n=n)
    print_fn(report.summary())
    return {"n": report.n, "train_docs": report.train_docs, "eval_items": report.eval_items,
            "contaminated_items": report.contaminated_items, "eval_ngrams": report.eval_ngrams,
            "shared_ngrams": report.shared_ngrams}
