"""lm-evaluation-harness tasks over our MCQ sources, with our own prompts.

The YAML files beside this module define two tasks; their dataset comes from
:func:`load` (``custom_dataset``), their prompts from :mod:`..scoring`, so the
harness asks exactly what ``evaluate`` asks:

- ``pure_transformer_mcq``: the letter after :func:`~pure_transformer.mcq.prompts.harness_prompt`,
  as ``evaluate --mode loglikelihood`` (and lm-eval's own ``medqa_4options``);
- ``pure_transformer_mcq_cloze``: the option text after the question alone, as
  ``evaluate --mode cloze`` (``acc`` and ``acc_norm``).

Which questions: the bundled test split by default; ``--metadata`` picks others::

    lm_eval --model hf --model_args pretrained=EXPORT --include_path $(python -c \\
        "import pure_transformer.eval.harness as h; print(h.TASKS_DIR)") \\
        --tasks pure_transformer_mcq --metadata '{"data_path": "medqa_test.jsonl"}'

``data_path`` is any file ``evaluate --data-path`` reads (MedQA hub jsonl, MedMCQA,
the normalised record); ``source`` a source name (default ``bundled-mcq``);
``split`` (default ``test``) and ``limit`` as in ``evaluate``.
"""

from __future__ import annotations

from typing import Any

# Absolute imports: lm-eval loads this file by path, outside the package.
from pure_transformer.mcq.prompts import cloze_prompt, harness_prompt
from pure_transformer.mcq.record import MCQ
from pure_transformer.mcq.schemas import mcq_to_record, normalize_mcq


def load(source: str = "bundled-mcq", data_path: str | None = None, split: str = "test", limit: int | None = None,
         **_: Any) -> Any:
    """The questions as a ``datasets.DatasetDict`` with one split, named ``test``."""
    import datasets

    from pure_transformer.data.registry import load_mcqs

    questions = load_mcqs(data_path or source, split, limit=limit)
    rows = [{"context": None, "explanation": None, "subject": None, **mcq_to_record(q)} for q in questions]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def _mcq(doc: dict) -> MCQ:
    # A table of mixed 4- and 5-option rows gives the shorter rows an "E": None, which the reader drops.
    return normalize_mcq(doc)


def letter_prompt(doc: dict) -> str:
    return harness_prompt(_mcq(doc))


def question_only(doc: dict) -> str:
    return cloze_prompt(_mcq(doc))


def letters(doc: dict) -> list[str]:
    return list(_mcq(doc).letters)


def gold_index(doc: dict) -> int:
    mcq = _mcq(doc)
    return mcq.letters.index(mcq.answer)


def option_texts(doc: dict) -> list[str]:
    return list(_mcq(doc).options.values())
