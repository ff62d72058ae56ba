"""Pretraining's MCQ validation and the choice of ``DIR/best``.

Validation loss is a poor guide to a model that must answer questions: in ``make demo`` the
lowest-loss step scored 0.007 where the last scored 0.420. So when the mixture holds MCQ
sources, every validation also asks a small fixed set of their *validation* questions in the
checkpoint's :class:`AnswerFormat`, greedily, and reads the answers with that format's parser:
the same :func:`~pure_transformer.eval.scoring.sample_answers` that ``evaluate --mode
generate`` scores with. ``best/`` then tracks that accuracy (``val_mcq_acc``); a mixture
without MCQs keeps ``val_loss``.

The question set is the first questions of each MCQ source's validation split that fit the
model's context with the format's answer budget: deterministic, the same on every rank and
on every resume. Under torchrun question ``i`` is answered on rank ``i % world_size``
(greedy answers do not depend on the batch), and the answers are gathered; an FSDP model is
unsharded first, so no forward waits on another rank's (see :func:`unsharded`).
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..data.registry import load_mcqs, source_kind
from ..data.sources import SourceKind
from ..distributed.parallel import is_sharded
from ..distributed.runtime import Runtime, all_gather_object
from ..eval.scoring import MIN_STEM_TOKENS, MCQScore, sample_answers, skip_cause
from ..inference.engine import Engine
from ..mcq.answer_format import AnswerFormat
from ..mcq.record import MCQ
from ..model.transformer import Transformer
from ..tokenizer.bpe import Tokenizer

ACCURACY = "val_mcq_acc"
"""The metrics key (TensorBoard ``val/mcq_acc``) that ``best/`` tracks when the mixture holds MCQs."""
LOSS = "val_loss"


@dataclass(frozen=True)
class MCQValidation:
    """The fixed questions asked at every validation, with where each came from."""

    questions: list[MCQ]
    sources: list[str]
    """Per question, its source name (for the per-source accuracies)."""
    answer_format: AnswerFormat
    max_new_tokens: int


def mcq_sources(sources: dict[str, float]) -> list[str]:
    """The mixture's sources that hold multiple-choice questions, in mixture order."""
    return [name for name in sources if source_kind(name) is SourceKind.MCQ]


def shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` counts that differ by at most one, the larger first."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def validation_questions(sources: dict[str, float], count: int, tok: Tokenizer, context: int,
                         answer_format: AnswerFormat, verbose: bool = True) -> MCQValidation | None:
    """The ``count`` validation questions (split evenly over the MCQ sources), or None when there
    is nothing to ask: ``count`` is 0, the mixture holds no MCQ source, or no question leaves room
    for an answer in the model's ``context`` (said aloud when ``verbose``)."""
    names = mcq_sources(sources) if count > 0 else []
    if not names:
        return None
    budget = answer_format.max_new_tokens()
    note = (lambda msg: print(f"note: {msg}", file=sys.stderr, flush=True)) if verbose else (lambda msg: None)
    if budget + MIN_STEM_TOKENS >= context:
        note(f"no MCQ validation: the model's {context}-token context leaves no room for the "
             f"{answer_format.value} format's {budget}-token answer; best/ tracks {LOSS}")
        return None
    questions: list[MCQ] = []
    origin: list[str] = []
    for name, wanted in zip(names, shares(count, len(names))):
        if not wanted:  # fewer questions asked for than there are MCQ sources
            continue
        # A few spare questions, so that the ones evaluate would skip can be passed over (a long stem
        # is cut to fit; options that leave no room for the answer, or that cannot be told apart, are not).
        pool = load_mcqs(name, "validation", limit=2 * wanted)
        kept = [q for q in pool if skip_cause(tok, q, answer_format, context, budget) is None][:wanted]
        if len(kept) < wanted:
            note(f"{name}: {len(kept)} of the {wanted} MCQ validation questions asked for fit the {context}-token "
                 f"context")
        questions += kept
        origin += [name] * len(kept)
    if not questions:
        note(f"no MCQ validation question fits the {context}-token context; best/ tracks {LOSS}")
        return None
    return MCQValidation(questions, origin, answer_format, budget)


@contextlib.contextmanager
def unsharded(model: torch.nn.Module) -> Iterator[None]:
    """Hold an FSDP2 model's parameters gathered (one all-gather per FSDP module, on every rank
    alike) and keep them so after each forward, so generation on one rank needs no other; the
    shards are restored on exit. Any other model is left as it is.

    Costs one full copy of the parameters per rank while it lasts (not of gradients or AdamW state)."""
    modules = [m for m in model.modules() if is_sharded(m)]
    if not modules:
        yield
        return
    # The root is set not to reshard after forward by FSDP itself; restore each module's own setting.
    before = [_reshard_after_forward(m) for m in modules]
    for m in modules:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield
    finally:
        for m, flag in zip(modules, before):
            m.set_reshard_after_forward(flag, recurse=False)
            m.reshard()


def _reshard_after_forward(module: Any) -> bool:
    groups = module._get_fsdp_state()._fsdp_param_groups  # no public getter (torch 2.6-2.13)
    return bool(groups[0]._reshard_after_forward) if groups else True


@torch.no_grad()
def mcq_validate(model: Transformer, tok: Tokenizer, val: MCQValidation, rt: Runtime) -> dict[str, float]:
    """Greedy accuracy on ``val``'s questions, overall (:data:`ACCURACY`) and per source, and the
    share of answers naming no option; every rank must call (answers are gathered)."""
    was_training = model.training
    model.eval()
    mine = val.questions[rt.rank::rt.world_size]
    # Blocks compiled for training would recompile for every cache shape of decoding: run them eagerly.
    with unsharded(model), torch.compiler.set_stance("force_eager"):
        answers = sample_answers(Engine(model, tok), mine, val.answer_format,
                                 max_new_tokens=val.max_new_tokens).answers if mine else []
    gathered: list[str | None] = [None] * len(val.questions)
    for r, part in enumerate(all_gather_object([a[0] for a in answers], rt)):
        gathered[r::rt.world_size] = part
    model.train(was_training)
    score = MCQScore.of(gathered, val.questions)
    out = {ACCURACY: score.accuracy, "val_mcq_no_answer": score.invalid_rate}
    for name in dict.fromkeys(val.sources):
        hits = [c for c, s in zip(score.correct, val.sources) if s == name]
        out[f"{ACCURACY}/{name}"] = sum(hits) / len(hits)
    return out


def best_metric(has_mcq: bool) -> str:
    """The metrics key ``best/`` tracks."""
    return ACCURACY if has_mcq else LOSS


def new_best(val: dict[str, float], best: dict[str, Any] | None, metric: str) -> bool:
    """Whether the validation ``val`` beats ``best`` (None: nothing yet) on ``metric``.

    Loss: strictly lower. Accuracy: strictly higher, or equal at a strictly lower validation
    loss. A small question set often ties; the tie then goes to the better language model,
    which is usually the later step."""
    if best is None:
        return True
    if metric == LOSS:
        return val[LOSS] < best["value"]
    return val[metric] > best["value"] or (val[metric] == best["value"] and val[LOSS] < best["val_loss"])


def best_record(val: dict[str, float], metric: str, step: int, questions: int = 0) -> dict[str, Any]:
    """What a checkpoint's meta.json says of the best validation so far (``meta["best"]``);
    ``questions``: how many MCQ validation questions the accuracy is over (0: none asked)."""
    return {"metric": metric, "value": val[metric], "step": step, "val_loss": val[LOSS], "questions": questions}


def restored_best(meta: dict[str, Any], metric: str) -> dict[str, Any] | None:
    """The best-so-far of a resumed run. A checkpoint from before ``meta["best"]`` tracked the
    loss (``best_val_loss``); one whose best was chosen by another metric (``val_mcq`` changed)
    starts the tracking afresh."""
    saved = meta.get("best")
    if isinstance(saved, dict) and saved.get("metric") == metric:
        return saved
    if saved is None and metric == LOSS and math.isfinite(meta.get("best_val_loss", math.inf)):
        return {"metric": LOSS, "value": meta["best_val_loss"], "step": None, "val_loss": meta["best_val_loss"]}
    return None
