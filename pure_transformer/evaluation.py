"""Multiple-choice accuracy with honest error bars.

Generation-mode scoring: the GRPO prompt, greedy decoding, ``extract_answer``.
Every accuracy comes with a 95% Wilson interval and its question count; a
before/after comparison on the same questions gets a paired bootstrap
interval for the difference, which is much tighter than comparing two
independent intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .data.mcq import MCQ, extract_answer, format_prompt
from .engine import Engine, SamplingParams
from .tokenizer import Tokenizer


def encode_prompt(tok: Tokenizer, mcq: MCQ) -> list[int]:
    """Token ids of the MCQ prompt, preceded by end-of-text (every training document
    starts with it). The prompt's trailing space is left to the model: in training
    text the space is fused with the answer letter (" C"), so a prompt ending in a
    lone " " token would ask for a token sequence the model never saw."""
    return [tok.eot_id] + tok.encode(format_prompt(mcq).rstrip(" "))


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_bootstrap_ci(before: Sequence[bool], after: Sequence[bool], *, samples: int = 10_000,
                        seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of mean(after) - mean(before) over the same questions."""
    a, b = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("before and after must score the same, non-empty set of questions")
    idx = np.random.default_rng(seed).integers(0, a.size, size=(samples, a.size))
    diffs = (b[idx] - a[idx]).mean(axis=1)
    return float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))


@dataclass
class MCQScore:
    accuracy: float
    ci95: tuple[float, float]
    n: int
    correct: list[bool]
    predictions: list[str | None]

    @property
    def invalid_rate(self) -> float:
        return sum(p is None for p in self.predictions) / max(1, self.n)


def greedy_mcq_accuracy(engine: Engine, questions: Sequence[MCQ], *, max_new_tokens: int = 8,
                        stop_strings: tuple[str, ...] = ("\n",), batch_size: int = 64) -> MCQScore:
    """Greedy-decode an answer to each question and score ``extract_answer`` against gold."""
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop_strings=stop_strings)
    predictions: list[str | None] = []
    for start in range(0, len(questions), batch_size):
        chunk = questions[start:start + batch_size]
        groups = engine.generate([encode_prompt(engine.tok, q) for q in chunk], params)
        predictions += [extract_answer(g[0].text) for g in groups]
    correct = [p == q.answer for p, q in zip(predictions, questions)]
    n = len(questions)
    return MCQScore(sum(correct) / max(1, n), wilson_interval(sum(correct), n), n, correct, predictions)
