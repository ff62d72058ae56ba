"""Multiple-choice accuracy with honest error bars.

Two scoring modes:

- **generate**: the GRPO prompt, greedy decoding, ``extract_answer``; also the
  invalid-answer rate and the distribution of answered letters (position bias).
- **loglikelihood**: as lm-evaluation-harness's ``medqa_4options``: the prompt
  ``"Question: ...\nA. ...\n...\nD. ...\nAnswer:"`` is scored with each
  continuation " A".." D" and the most likely letter wins; the softmax over
  the four scores gives a confidence, summarised by the expected calibration
  error (ECE, 10 equal-width bins).

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

import torch
from tqdm.auto import tqdm

from ..mcq import LETTERS, MCQ, extract_answer, format_prompt
from ..engine import Engine, SamplingParams
from ..errors import DataError
from ..tokenizer import Tokenizer


TASKS = {"synthetic": "bundled-mcq", "medqa": "medqa", "medmcqa": "medmcqa"}
"""Task name -> dataset (the registry's name for it)."""


def task_source(task: str, data_path: str | None = None) -> str:
    """The dataset name (or local path, which wins) behind a task."""
    if data_path is not None:
        return data_path
    if task not in TASKS:
        raise DataError(f"unknown task '{task}'; choose one of: {', '.join(TASKS)}")
    return TASKS[task]


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
    ece: float | None = None
    """Expected calibration error (loglikelihood mode only)."""

    @classmethod
    def of(cls, predictions: list[str | None], questions: Sequence[MCQ], ece: float | None = None) -> "MCQScore":
        correct = [p == q.answer for p, q in zip(predictions, questions)]
        n = len(questions)
        return cls(sum(correct) / max(1, n), wilson_interval(sum(correct), n), n, correct, predictions, ece)

    @property
    def invalid_rate(self) -> float:
        return sum(p is None for p in self.predictions) / max(1, self.n)

    @property
    def letter_distribution(self) -> dict[str, float]:
        return {k: sum(p == k for p in self.predictions) / max(1, self.n) for k in (*LETTERS, None)}

    def report(self) -> dict:
        """JSON-ready summary (per-question lists omitted)."""
        out = {"accuracy": self.accuracy, "ci95": list(self.ci95), "n": self.n, "invalid_rate": self.invalid_rate,
               "letters": {str(k): v for k, v in self.letter_distribution.items()}}
        if self.ece is not None:
            out["ece"] = self.ece
        return out


def harness_prompt(mcq: MCQ) -> str:
    """lm-evaluation-harness ``medqa_4options`` prompt (single newlines, no trailing space)."""
    options = "\n".join(f"{k}. {v}" for k, v in mcq.options.items())
    return f"Question: {mcq.question}\n{options}\nAnswer:"


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """Sum over equal-width confidence bins of |accuracy - confidence| weighted by bin size."""
    conf, hit = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    return float(sum(abs(hit[which == b].mean() - conf[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))


@torch.no_grad()
def letter_scores(model: torch.nn.Module, tok: Tokenizer, questions: Sequence[MCQ]) -> torch.Tensor:
    """(len(questions), 4) summed log-likelihoods of " A".." D" after :func:`harness_prompt`.

    Over-long prompts keep their end, as lm-evaluation-harness does. Rows are
    right-padded, so the scored positions never see the padding.
    """
    model.eval()
    device = next(model.parameters()).device
    context = model.cfg.max_seq_len
    conts = [tok.encode(f" {letter}") for letter in LETTERS]
    seqs = [([tok.eot_id] + tok.encode(harness_prompt(q)) + c)[-context:] for q in questions for c in conts]
    ids = torch.full((len(seqs), max(map(len, seqs))), tok.pad_id, dtype=torch.long)
    for i, seq in enumerate(seqs):
        ids[i, :len(seq)] = torch.tensor(seq)
    _, logits = model(ids.to(device))
    logp = torch.log_softmax(logits.float(), dim=-1)  # (4b, W, V)
    scores = torch.stack([logp[i, torch.arange(len(seq) - len(cont) - 1, len(seq) - 1), torch.tensor(seq[-len(cont):])]
                          .sum() for i, (seq, cont) in enumerate(zip(seqs, conts * len(questions)))])
    return scores.view(len(questions), len(LETTERS)).cpu()


def loglikelihood_mcq_accuracy(model: torch.nn.Module, tok: Tokenizer, questions: Sequence[MCQ], *,
                               batch_size: int = 16, progress: bool = False) -> MCQScore:
    """The most likely letter per question (:func:`letter_scores`); accuracy, CI and ECE."""
    predictions, confidence = [], []
    for start in tqdm(range(0, len(questions), batch_size), disable=not progress, desc="loglikelihood"):
        probs = torch.softmax(letter_scores(model, tok, questions[start:start + batch_size]), dim=-1)  # (b, 4)
        conf, best = probs.max(dim=-1)
        predictions += [LETTERS[i] for i in best.tolist()]
        confidence += conf.tolist()
    score = MCQScore.of(predictions, questions)
    score.ece = expected_calibration_error(confidence, score.correct)
    return score


def greedy_mcq_accuracy(engine: Engine, questions: Sequence[MCQ], *, max_new_tokens: int = 8,
                        stop_strings: tuple[str, ...] = ("\n",), batch_size: int = 64,
                        progress: bool = False) -> MCQScore:
    """Greedy-decode an answer to each question and score ``extract_answer`` against gold."""
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop_strings=stop_strings)
    predictions: list[str | None] = []
    for start in tqdm(range(0, len(questions), batch_size), disable=not progress, desc="generate"):
        chunk = questions[start:start + batch_size]
        room = engine.model.cfg.max_seq_len - max_new_tokens  # over-long prompts keep their end, as harnesses do
        groups = engine.generate([encode_prompt(engine.tok, q)[-room:] for q in chunk], params)
        predictions += [extract_answer(g[0].text) for g in groups]
    return MCQScore.of(predictions, questions)
