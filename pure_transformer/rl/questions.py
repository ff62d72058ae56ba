"""Which questions GRPO trains on and validates on.

Validation comes from ``--val-data-path`` when given, else from the training
source's own validation split. A source without enough validation questions (a
user's single file, a small set) lends some of its training questions instead:
a deterministic slice, chosen by a hash of the question text, which training
then never sees.
"""

from __future__ import annotations

import hashlib
import sys
from itertools import islice

from ..data.registry import load_mcqs, resolve_source
from ..errors import DataError
from ..mcq.record import MCQ

MIN_VALIDATION = 8
"""Fewer validation questions than this cannot tell learning from noise."""
MIN_TRAIN = 4
HOLDOUT_FRACTION = 0.1


def _key(q: MCQ) -> bytes:
    return hashlib.blake2b(q.question.encode("utf-8"), digest_size=8).digest()


def rl_questions(source: str, val_source: str | None, limit: int | None) -> tuple[list[MCQ], list[MCQ]]:
    """(training questions, at most ``limit`` validation questions) for a GRPO run."""
    train = load_mcqs(source, "train")
    if val_source is not None:
        return train, load_mcqs(val_source, "validation", limit=limit)
    own = list(islice(resolve_source(source).mcqs("validation"), limit))
    if len(own) >= MIN_VALIDATION:
        return train, own
    wanted = max(MIN_VALIDATION, round(HOLDOUT_FRACTION * len(train)))
    count = min(wanted, limit) if limit is not None else wanted
    if len(train) - count < MIN_TRAIN:
        raise DataError(f"'{source}' has {len(train)} training and {len(own)} validation questions: too few to hold "
                        f"out {count} for validation; pass a validation file with --val-data-path FILE")
    held = set(sorted(range(len(train)), key=lambda i: _key(train[i]))[:count])
    print(f"note: '{source}' has {len(own)} validation questions; holding out {count} of its {len(train)} training "
          f"questions for validation (--val-data-path FILE gives others)", file=sys.stderr, flush=True)
    return [q for i, q in enumerate(train) if i not in held], [train[i] for i in sorted(held)]
