"""Multiple-choice accuracy with honest error bars, in every formulation.

Scoring modes:

- **generate**: the prompt of the checkpoint's :class:`AnswerFormat`, greedy
  decoding, and that format's strict parser; also the rate of answers that name
  no option, and the distribution of answered letters (position bias).
- **passk**: ``k`` samples per question at temperature 1 under the same parser:
  pass@1 (mean correctness) and pass@k (any correct). GRPO can only sharpen
  what sampling already finds, so measure this before a long RL run.
- **loglikelihood** (letter): each option's choice string scored after the
  task's prompt, as lm-evaluation-harness's own task defines both
  (:mod:`.conventions`; e.g. ``medqa_4options``: ``"Question: ...\nA. ...\n...\nD.
  ...\nAnswer:"`` with " A".." D"; PubMedQA: " yes", " no", " maybe"); tasks
  lm-eval does not define get ``medqa_4options``'s prompt for their option count.
  The softmax over the scores gives a confidence, summarised by the expected
  calibration error (ECE, 10 bins).
- **cloze**: the question without its options, then ``"Answer:"``, scored with
  each option's text as the continuation (OLMES's cloze formulation): ``acc``
  takes the largest summed log-likelihood, ``acc_norm`` the largest per
  character of the option (lm-eval's ``acc_norm``).

Every accuracy comes with a 95% Wilson interval and its question count, and
reports carry per-question results, so a before/after comparison on the same
questions gets a paired bootstrap interval for the difference.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import DataError
from ..inference.engine import Engine, SamplingParams, prompt_seed
from ..mcq.answer_format import AnswerFormat, check_answerable
from ..mcq.prompts import cloze_prompt
from ..mcq.record import LETTERS, MCQ
from ..tokenizer.bpe import Tokenizer
from .conventions import CONVENTIONS, GENERIC, Convention

MEDICAL_SUITE: tuple[str, ...] = tuple(CONVENTIONS)
"""The Open Medical-LLM Leaderboard's nine tasks: those lm-eval defines, each scored by its convention."""

TASKS = {"synthetic": "bundled-mcq", **{name: name for name in (*MEDICAL_SUITE, "medqa5", "medbullets")}}
"""Task name -> dataset (the registry's name for it)."""


def task_source(task: str, data_path: str | None = None) -> str:
    """The dataset name (or local path, which wins) behind a task."""
    if data_path is not None:
        return data_path
    if task not in TASKS:
        raise DataError(f"unknown task '{task}'; choose one of: {', '.join(TASKS)}")
    return TASKS[task]


def encode_prompt(tok: Tokenizer, mcq: MCQ, answer_format: AnswerFormat = AnswerFormat.LETTER) -> list[int]:
    """Token ids of the MCQ prompt, after the tokenizer's start ids (``tok.start_ids``: our
    end-of-text, which every training document starts with; Llama-3's begin-of-text; none for
    Qwen). The prompt ends at the cue ("Answer:"): in training text the space after it is fused
    with the answer (" C"), so a prompt ending in a lone " " token would ask for a token
    sequence the model never saw."""
    return tok.start_ids + tok.encode(answer_format.prompt(mcq))


MIN_STEM_TOKENS = 8
"""The fewest tokens of question text a cut prompt keeps: less is not a question any more."""


def fit_prompt(tok: Tokenizer, mcq: MCQ, answer_format: AnswerFormat, context: int,
               reserve: int) -> tuple[list[int], bool]:
    """(prompt ids, whether they were cut): :func:`encode_prompt` made to fit ``context`` with
    ``reserve`` tokens left for the answer.

    A prompt that does not fit is cut from the start of its body (the context, then the
    question stem; :meth:`AnswerFormat.prompt_parts`), at a word boundary; its head
    ("Question: "), its options and its cue are never cut. Raises :class:`DataError`,
    naming the numbers, when the options and cue alone leave no room.
    """
    ids = encode_prompt(tok, mcq, answer_format)
    limit = context - reserve
    if len(ids) <= limit:
        return ids, False
    head, body, tail = answer_format.prompt_parts(mcq)
    fixed = len(tok.start_ids) + len(tok.encode(head)) + len(tok.encode(tail))
    body_ids = tok.encode(body)
    budget = limit - fixed
    while budget >= MIN_STEM_TOKENS:
        kept = tok.decode(body_ids[-budget:])
        kept = kept.split(" ", 1)[1] if " " in kept[1:] else kept  # drop the partial first word
        ids = tok.start_ids + tok.encode(head + kept + tail)
        if len(ids) <= limit:
            return ids, True
        budget -= len(ids) - limit  # BPE merges differ at the cut: shrink by the overflow and retry
    raise DataError(f"question '{mcq.question[:40]}...' does not fit: its options and cue take {fixed} tokens, "
                    f"the answer {reserve}, and the model's context is {context} tokens")


NO_ROOM = "no_room"
"""A skip cause: the options and cue leave no room for the answer budget in the model's context."""
UNANSWERABLE = "unanswerable"
"""A skip cause: the format's parser can never name one of the options (:func:`check_answerable`)."""


def skip_cause(tok: Tokenizer, mcq: MCQ, answer_format: AnswerFormat, context: int, budget: int) -> str | None:
    """Why ``mcq`` cannot be asked in ``answer_format`` with ``budget`` tokens left for the answer
    (:data:`NO_ROOM`, :data:`UNANSWERABLE`), or None when it can. A long stem never rules a question
    out: :func:`fit_prompt` cuts it."""
    if answer_format is not AnswerFormat.LETTER and check_answerable(mcq) is not None:
        return UNANSWERABLE
    try:
        fit_prompt(tok, mcq, answer_format, context, budget)
    except DataError:
        return NO_ROOM
    return None


def question_id(mcq: MCQ) -> str:
    """A stable id of a question (its text and options), to pair results across reports."""
    return hashlib.sha1(json.dumps([mcq.question, mcq.options], sort_keys=True).encode()).hexdigest()[:12]


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
    return bootstrap_ci(b - a, samples=samples, seed=seed)


def bootstrap_ci(values: Sequence[float], *, samples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the mean of per-question ``values`` (questions resampled)."""
    x = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, x.size, size=(samples, x.size))
    means = x[idx].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


@dataclass
class MCQScore:
    accuracy: float
    ci95: tuple[float, float]
    n: int
    correct: list[bool]
    predictions: list[str | None]
    ids: list[str]
    gold: list[str]
    extra: dict[str, Any]
    """Mode-specific figures (ece, acc_norm, pass@k ...), reported beside the accuracy."""
    shares: list[float] | None = None
    """passk: each question's share of correct samples (what its pass@1 averages, and what gains pair on)."""
    generations: list[list[str]] | None = None
    """generate/passk: each question's generated texts (in the report with ``generations=True``)."""
    causes: list[str | None] | None = None
    """generate: why each unanswered question's text names no option (None where it answered)."""

    @classmethod
    def of(cls, predictions: list[str | None], questions: Sequence[MCQ], **extra: Any) -> "MCQScore":
        correct = [p == q.answer for p, q in zip(predictions, questions)]
        n = len(questions)
        # Chance follows each question's own option count (1/k), so a mixed file gets its true mean. The
        # majority baseline is what always answering the commonest gold letter scores: a file sorted or
        # skewed by answer shows here before an accuracy near it is read as skill.
        chance = sum(q.chance for q in questions) / max(1, n)
        gold = [q.answer for q in questions]
        majority = max(map(gold.count, set(gold)), default=0) / max(1, n)
        return cls(sum(correct) / max(1, n), wilson_interval(sum(correct), n), n, correct, predictions,
                   [question_id(q) for q in questions], gold, {"chance": chance, "majority": majority, **extra})

    @property
    def invalid_rate(self) -> float:
        return sum(p is None for p in self.predictions) / max(1, self.n)

    @property
    def letter_distribution(self) -> dict[str, float]:
        highest = max((LETTERS.index(g) for g in (*self.gold, *filter(None, self.predictions))), default=3)
        return {k: sum(p == k for p in self.predictions) / max(1, self.n)
                for k in (*LETTERS[:max(4, highest + 1)], None)}

    def report(self, generations: bool = False) -> dict:
        """JSON-ready summary, with one ``{id, prediction, gold, correct}`` record per question, plus its
        ``share`` (passk), its no-answer ``cause`` (generate) and, with ``generations``, the generated texts."""
        questions = []
        for i, (qid, p, g, c) in enumerate(zip(self.ids, self.predictions, self.gold, self.correct)):
            row: dict[str, Any] = {"id": qid, "prediction": p, "gold": g, "correct": c}
            if self.shares is not None:
                row["share"] = self.shares[i]
            if self.causes is not None and self.causes[i] is not None:
                row["cause"] = self.causes[i]
            if generations and self.generations is not None:
                texts = self.generations[i]
                row["generation" if len(texts) == 1 else "generations"] = texts[0] if len(texts) == 1 else texts
            questions.append(row)
        return {"accuracy": self.accuracy, "ci95": list(self.ci95), "n": self.n, "invalid_rate": self.invalid_rate,
                "letters": {str(k): v for k, v in self.letter_distribution.items()}, **self.extra,
                "questions": questions}


def paired_gain(before: dict, after: dict) -> tuple[float, tuple[float, float], int]:
    """(mean gain, its 95% paired bootstrap CI, questions paired) between two reports' per-question results:
    correctness, or for passk each question's share of correct samples, so the gain measures pass@1."""
    earlier = {q["id"]: q.get("share", q["correct"]) for q in before["questions"]}
    pairs = [(earlier[q["id"]], q.get("share", q["correct"])) for q in after["questions"] if q["id"] in earlier]
    if not pairs:
        raise DataError("the two reports share no question")
    was, now = zip(*pairs)
    return float(np.mean(now) - np.mean(was)), paired_bootstrap_ci(was, now), len(pairs)


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """Sum over equal-width confidence bins of |accuracy - confidence| weighted by bin size."""
    conf, hit = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    return float(sum(abs(hit[which == b].mean() - conf[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))


@dataclass
class PairScores:
    """:func:`continuation_scores`' answer: per (context, continuation) pair, its summed log-likelihood and
    whether its sequence was longer than the model's context (its start then dropped, as lm-eval does)."""

    logprobs: torch.Tensor
    """(P,) summed log-likelihood of each continuation after its context."""
    truncated: list[bool]


@torch.no_grad()
def continuation_scores(model: torch.nn.Module, tok: Tokenizer, pairs: Sequence[tuple[str, str]]) -> PairScores:
    """Score each continuation after its context, the two after the tokenizer's start ids.

    Over-long sequences keep their end, as lm-evaluation-harness does, and are counted; rows are
    right-padded, so the scored positions never see the padding. The last continuation token is a
    target, never an input, so pairs with one context and one-token continuations (the letters
    " A".." D") share a single forward row. The head runs only at the scored positions: a
    (R, W, V) logits tensor for a whole row of a long question is most of the work otherwise.
    """
    model.eval()
    device = next(model.parameters()).device
    context = model.cfg.max_seq_len
    rows: dict[tuple[int, ...], int] = {}  # distinct model inputs -> row
    scored = []  # per pair: (row, first scored position, target ids)
    truncated = []
    for ctx, cont in pairs:
        cont_ids = tok.encode(cont)
        full = tok.start_ids + tok.encode(ctx) + cont_ids
        seq = full[-context - 1:]
        truncated.append(len(seq) < len(full))
        inputs, targets = tuple(seq[:-1]), seq[-len(cont_ids):]
        row = rows.setdefault(inputs, len(rows))
        scored.append((row, len(inputs) - len(targets), targets))
    ids = torch.full((len(rows), max(map(len, rows))), tok.pad_id, dtype=torch.long)
    for inputs, row in rows.items():
        ids[row, :len(inputs)] = torch.tensor(inputs)
    keep = torch.zeros(ids.shape, dtype=torch.bool)  # (R, W): the positions some pair scores
    for row, start, targets in scored:
        keep[row, start:start + len(targets)] = True
    where = keep.flatten().cumsum(0).view(keep.shape) - 1  # (R, W): a kept position's row in the logits
    _, logits = model(ids.to(device), keep=keep.to(device))  # (N, V), N = kept positions
    sums = []
    for row, start, targets in scored:
        at = where[row, start:start + len(targets)].to(logits.device)
        logp = torch.log_softmax(logits[at].float(), dim=-1)  # (n, V)
        sums.append(logp[torch.arange(len(targets)), torch.tensor(targets, device=logp.device)].sum())
    return PairScores(torch.stack(sums).cpu(), truncated)


def continuation_logprobs(model: torch.nn.Module, tok: Tokenizer, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
    """(len(pairs),) summed log-likelihood of each continuation after its context (:func:`continuation_scores`)."""
    return continuation_scores(model, tok, pairs).logprobs


def per_question(flat: torch.Tensor, questions: Sequence[MCQ]) -> list[torch.Tensor]:
    """Split scores of every (question, option) pair, in order, into one (k_i,) tensor per question."""
    return list(torch.split(flat, [len(q.options) for q in questions]))


def letter_scores(model: torch.nn.Module, tok: Tokenizer, questions: Sequence[MCQ],
                  convention: Convention = GENERIC) -> list[torch.Tensor]:
    """Per question, the (k,) summed log-likelihoods of its k choices after the ``convention``'s prompt:
    " A".. after :func:`~pure_transformer.mcq.prompts.harness_prompt` by default; a task's own (e.g. PubMedQA's
    " yes"/" no"/" maybe")
    from :func:`~.conventions.convention_for`. Entry i is option i's, whatever the choice strings."""
    pairs = [pair for q in questions for pair in convention.pairs(q)]
    return per_question(continuation_logprobs(model, tok, pairs), questions)


def loglikelihood_mcq_accuracy(model: torch.nn.Module, tok: Tokenizer, questions: Sequence[MCQ], *,
                               convention: Convention = GENERIC, batch_size: int = 16,
                               progress: bool = False) -> MCQScore:
    """The most likely choice per question (its choices scored after the ``convention``'s prompt, as
    :func:`letter_scores`), reported as its letter; accuracy, CI, ECE and the prompts cut to fit."""
    predictions, confidence, cut = [], [], []
    for start in tqdm(range(0, len(questions), batch_size), disable=not progress, desc="loglikelihood"):
        chunk = questions[start:start + batch_size]
        scored = continuation_scores(model, tok, [pair for q in chunk for pair in convention.pairs(q)])
        for scores in per_question(scored.logprobs, chunk):
            conf, best = torch.softmax(scores, dim=-1).max(dim=-1)  # over the question's k letters
            predictions.append(LETTERS[int(best)])
            confidence.append(float(conf))
        cut += [bool(flags.any()) for flags in per_question(torch.tensor(scored.truncated), chunk)]
    correct = [p == q.answer for p, q in zip(predictions, questions)]
    return MCQScore.of(predictions, questions, ece=expected_calibration_error(confidence, correct), **truncation(cut))


def cloze_mcq_accuracy(model: torch.nn.Module, tok: Tokenizer, questions: Sequence[MCQ], *,
                       batch_size: int = 16, progress: bool = False) -> MCQScore:
    """The option text with the largest log-likelihood after :func:`cloze_prompt` (``acc``);
    ``acc_norm`` divides each score by the option's length in characters (lm-eval's)."""
    predictions, normed, cut = [], [], []
    for start in tqdm(range(0, len(questions), batch_size), disable=not progress, desc="cloze"):
        chunk = questions[start:start + batch_size]
        scored = continuation_scores(model, tok, [(cloze_prompt(q), f" {text}") for q in chunk
                                                  for text in q.options.values()])
        for q, scores in zip(chunk, per_question(scored.logprobs, chunk)):  # (k,) each
            # lm-eval's acc_norm: the choice's length in characters, without the delimiter's space
            lengths = torch.tensor([len(text) for text in q.options.values()], dtype=torch.float)
            predictions.append(LETTERS[int(scores.argmax())])
            normed.append(LETTERS[int((scores / lengths).argmax())])
        cut += [bool(flags.any()) for flags in per_question(torch.tensor(scored.truncated), chunk)]
    acc_norm = sum(p == q.answer for p, q in zip(normed, questions)) / max(1, len(questions))
    return MCQScore.of(predictions, questions, acc_norm=acc_norm, **truncation(cut))


@dataclass
class SampledAnswers:
    """Per question, its samples' answers (a letter or None), why each None, the texts, and whether
    its prompt was cut to fit (:func:`fit_prompt`)."""

    answers: list[list[str | None]]
    causes: list[list[str | None]]
    texts: list[list[str]]
    truncated: list[bool]


def answer_params(answer_format: AnswerFormat, max_new_tokens: int | None = None, temperature: float = 0.0,
                  seed: int | None = None) -> SamplingParams:
    """How an answer in ``answer_format`` is generated (here and by ``/v1/mcq``): the format's budget
    unless ``max_new_tokens`` says otherwise, and its stop strings."""
    return SamplingParams(max_new_tokens=max_new_tokens or answer_format.max_new_tokens(), temperature=temperature,
                          stop_strings=answer_format.stop_strings(), seed=seed)


def sample_answers(engine: Engine, questions: Sequence[MCQ], answer_format: AnswerFormat, *, samples: int = 1,
                   temperature: float = 0.0, max_new_tokens: int | None = None, batch_size: int = 64,
                   seed: int = 0, progress: bool = False, desc: str = "generate") -> SampledAnswers:
    """``samples`` answers per question in ``answer_format``, each read by the format's parser.

    Generation stops at the format's stop strings (a run-on into a new question)
    and at end-of-text; over-long prompts lose the start of their stem (:func:`fit_prompt`).
    """
    budget = max_new_tokens or answer_format.max_new_tokens()
    context = engine.model.cfg.max_seq_len
    if budget + MIN_STEM_TOKENS >= context:
        raise DataError(f"--max-new-tokens {budget} leaves no room for a prompt in the model's {context}-token context")
    params = answer_params(answer_format, budget, temperature, seed if temperature > 0 else None)
    fitted = [fit_prompt(engine.tok, q, answer_format, context, budget) for q in questions]  # errors before any work
    per_batch = max(1, batch_size // samples)
    out = SampledAnswers([], [], [], [cut for _, cut in fitted])
    for start in tqdm(range(0, len(questions), per_batch), disable=not progress, desc=desc):
        chunk = questions[start:start + per_batch]
        # Seeded per question, not per batch slot: the draws do not depend on batch_size.
        seeds = [prompt_seed(seed, start + i) for i in range(len(chunk))] if temperature > 0 else None
        groups = engine.generate([ids for ids, _ in fitted[start:start + per_batch]], params, samples, seeds=seeds)
        for q, group in zip(chunk, groups):
            reads = [answer_format.read(q, s.text) for s in group]
            out.answers.append([letter for letter, _ in reads])
            out.causes.append([cause for _, cause in reads])
            out.texts.append([s.text for s in group])
    return out


def truncation(cut: Sequence[bool]) -> dict[str, float]:
    """The report's count and share of prompts cut to fit the context."""
    return {"truncated": float(sum(cut)), "truncated_share": sum(cut) / max(1, len(cut))}


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The most frequent answer among ``answers``; a tie for the top (or no answer at all) is no answer,
    so a vote never favours the letter that sorts first."""
    counts = sorted(((answers.count(a), a) for a in set(answers) if a is not None), reverse=True)
    if not counts or (len(counts) > 1 and counts[0][0] == counts[1][0]):
        return None
    return counts[0][1]


def greedy_mcq_accuracy(engine: Engine, questions: Sequence[MCQ], answer_format: AnswerFormat = AnswerFormat.LETTER,
                        *, max_new_tokens: int | None = None, batch_size: int = 64, progress: bool = False) -> MCQScore:
    """Greedy-decode an answer to each question in ``answer_format`` and score it against gold."""
    sampled = sample_answers(engine, questions, answer_format, max_new_tokens=max_new_tokens, batch_size=batch_size,
                             progress=progress)
    score = MCQScore.of([a[0] for a in sampled.answers], questions, **truncation(sampled.truncated))
    score.causes, score.generations = [c[0] for c in sampled.causes], sampled.texts
    causes = [c for c in score.causes if c is not None]
    score.extra["no_answer_causes"] = {cause: causes.count(cause) for cause in sorted(set(causes))}
    return score


def passk_mcq_accuracy(engine: Engine, questions: Sequence[MCQ], answer_format: AnswerFormat, *, k: int = 16,
                       max_new_tokens: int | None = None, batch_size: int = 64, seed: int = 0,
                       progress: bool = False) -> MCQScore:
    """``k`` samples per question at temperature 1: the score's accuracy is pass@1 (the mean
    correctness of the samples); ``pass@k`` (any sample correct) is reported beside it.
    With exactly ``k`` samples the unbiased pass@k estimator is "any of them is right".
    Per-question predictions are the most frequent answer."""
    sampled = sample_answers(engine, questions, answer_format, samples=k, temperature=1.0,
                             max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, progress=progress,
                             desc="passk")
    answers = sampled.answers
    hits = [[a == q.answer for a in group] for q, group in zip(questions, answers)]
    majority = [majority_vote(group) for group in answers]
    score = MCQScore.of(majority, questions, **truncation(sampled.truncated))
    pass1 = float(np.mean([np.mean(h) for h in hits])) if hits else 0.0
    passk = float(np.mean([any(h) for h in hits])) if hits else 0.0
    score.extra.update({"pass@1": pass1, f"pass@{k}": passk, "majority_accuracy": score.accuracy})
    # The k samples of a question are not independent: the interval resamples questions. A bootstrap of
    # all-equal shares (every sample wrong) has zero width, so the interval also covers Wilson's on the
    # questions, which never does.
    low, high = bootstrap_ci([float(np.mean(h)) for h in hits])
    w_low, w_high = wilson_interval(round(pass1 * len(hits)), len(hits))
    score.accuracy, score.ci95 = pass1, (min(low, w_low), max(high, w_high))
    score.shares, score.generations = [float(np.mean(h)) for h in hits], sampled.texts
    score.extra[f"pass@{k}_ci95"] = list(wilson_interval(sum(map(any, hits)), len(hits)))
    return score
