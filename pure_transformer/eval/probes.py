"""Does a model read the options? Two probes behind the GRPO findings in docs/GRPO.md.

Every multiple-choice answer needs an in-context lookup: the letter is only
known from where the right text sits in *this* question's option list. A model
that cannot do that lookup is at chance on held-out questions whatever it knows,
and GRPO then has no question-dependent signal to sharpen.

* :func:`option_copy_accuracy` checks a trained checkpoint on real questions:
  after ``"Answer: C."`` does it continue with option C's text? That is the
  easy direction (letter -> text), which every MCQ in the training text shows
  once; chance for a model that copies *some* option is 1/4.
* :func:`lookup_drill` trains a fresh model on nothing but the hard direction
  (text -> letter) with random values, so no knowledge is needed, and reports
  how quickly, if at all, it learns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from ..mcq.record import MCQ
from ..model.config import ModelConfig
from ..model.transformer import Transformer, build_model
from ..tokenizer.bpe import Tokenizer
from .scoring import encode_prompt


@torch.no_grad()
def option_copy_accuracy(model: Transformer, tok: Tokenizer, questions: Sequence[MCQ]) -> float:
    """Fraction of questions where, after the prompt and ``" L."`` (L cycling
    over the question's letters so every letter is asked equally), the greedy next token is the
    first token of option L's text. Prompts longer than the context keep their end."""
    model.eval()
    device = next(model.parameters()).device
    hits = 0
    for i, q in enumerate(questions):
        letter = q.letters[i % len(q.letters)]
        ids = encode_prompt(tok, q) + tok.encode(f" {letter}.")  # as in training text: "Answer: C. Warfarin"
        ids = ids[-model.cfg.max_seq_len:]  # a long question loses its start; the options stay
        _, logits = model(torch.tensor([ids], device=device), last_only=True)  # (1, 1, V)
        hits += int(logits[0, -1].argmax()) == tok.encode(" " + q.options[letter])[0]
    return hits / max(1, len(questions))


@dataclass(frozen=True)
class DrillBatch:
    """``[k1 v1 k2 v2 k3 v3 k4 v4, filler..., SEP, v_q]`` -> the key k_q paired with v_q."""

    input_ids: torch.Tensor  # (B, 8 + filler + 2)
    answer: torch.Tensor  # (B,) the key token to predict after the last position


def drill_batches(vocab_size: int, batch_size: int, filler: int = 20, seed: int = 0) -> Iterator[DrillBatch]:
    """Endless drill batches. Keys are 4 fixed tokens in a random order (the
    letters), values are random tokens (the option texts); the question gives a
    value and the answer is its key, as an MCQ gives a text and wants its letter."""
    gen = torch.Generator().manual_seed(seed)
    keys = torch.arange(10, 14)  # four letters
    sep, low = 5, 100  # ids below `low` are never values or filler
    rows = torch.arange(batch_size)
    while True:
        order = torch.stack([keys[torch.randperm(len(keys), generator=gen)] for _ in range(batch_size)])  # (B, 4)
        values = torch.randint(low, vocab_size, (batch_size, len(keys)), generator=gen)  # (B, 4)
        pairs = torch.stack([order, values], dim=-1).reshape(batch_size, -1)  # (B, 8): k1 v1 k2 v2 ...
        noise = torch.randint(low, vocab_size, (batch_size, filler), generator=gen)
        asked = torch.randint(0, len(keys), (batch_size,), generator=gen)
        query = torch.stack([torch.full((batch_size,), sep), values[rows, asked]], dim=1)  # (B, 2)
        yield DrillBatch(torch.cat([pairs, noise, query], dim=1), order[rows, asked])


def lookup_drill(cfg: ModelConfig, steps: int, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
                 report_every: int = 100, positional_control: bool = False) -> Iterator[tuple[int, float, float]]:
    """Train a fresh ``cfg`` model on :func:`drill_batches` with AdamW, yielding
    ``(step, loss, accuracy on a held-out batch of 512)`` every ``report_every``
    steps. Chance is loss ln 4 = 1.386 and accuracy 0.25.

    ``positional_control`` asks instead for the value at a fixed place (the first
    pair's): a copy that needs no matching, which shows the same model and loop
    do learn to copy from the context when the lookup is by position."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)

    def target(batch: DrillBatch) -> torch.Tensor:
        return batch.input_ids[:, 1] if positional_control else batch.answer

    held_out = next(drill_batches(cfg.vocab_size, 512, seed=seed + 1))
    for step, batch in zip(range(1, steps + 1), drill_batches(cfg.vocab_size, batch_size, seed=seed)):
        model.train()
        _, logits = model(batch.input_ids, last_only=True)  # (B, 1, V)
        loss = F.cross_entropy(logits[:, -1].float(), target(batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % report_every == 0 or step == steps:
            model.eval()
            with torch.no_grad():
                _, test_logits = model(held_out.input_ids, last_only=True)
            accuracy = float((test_logits[:, -1].argmax(-1) == target(held_out)).float().mean())
            yield step, loss.item(), accuracy
