"""Reading MCQ records in every public schema the project knows into one :class:`~pure_transformer.mcq.record.MCQ`.

Each schema is a :class:`Schema`: how to recognise a record (by its keys) and how
to read it. :func:`normalize_mcq` tries them in :data:`SCHEMAS` order; a record
that none recognises gets one error that lists them all. The hub ids are in
``../shared/BENCHMARKS.md`` and :mod:`pure_transformer.eval.benchmarks`.

==================  =============================================================
schema              fields
==================  =============================================================
normalised          question, options {A..}, answer letter[, explanation, subject, context]
MedQA               question, options {A..} or [{key, value}], answer_idx letter
MedQA (-hf)         sent1, ending0..ending3, label int 0-based (GBaker/MedQA-USMLE-4-options-hf)
MedMCQA/Medbullets  question, opa..ope, cop int 0-based or answer_idx letter[, exp/explanation]
PubMedQA            question, context {contexts: [..]}, final_decision yes/no/maybe
                    (bigbio: QUESTION, CONTEXTS, final_decision)
MMLU (hub)          question, choices [..], answer int 0-based[, subject]
MMLU (CSV)          question, A, B, C, D, answer letter (the original headerless CSV)
==================  =============================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..errors import DataError
from .record import LETTERS, MCQ

MMLU_CSV_COLUMNS: tuple[str, ...] = ("question", "A", "B", "C", "D", "answer")
"""Column names given to MMLU's original headerless CSV files when they are read."""

PUBMEDQA_OPTIONS: dict[str, str] = {"A": "yes", "B": "no", "C": "maybe"}

_OP_KEYS: tuple[str, ...] = tuple(f"op{c}" for c in "abcdefghij")  # MedMCQA's opa.. (Medbullets adds ope)


def _location(where: str) -> str:
    return f" ({where})" if where else ""


def _require(record: Mapping[str, Any], fields: tuple[str, ...], schema: str, where: str) -> None:
    missing = [f for f in fields if record.get(f) is None]
    if missing:
        raise DataError(f"{schema} record is missing field(s) {', '.join(missing)}{_location(where)}")


def _clean(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _options_dict(raw: Any, where: str) -> dict[str, str]:
    """Options as a dict (MedQA, normalised form) or as [{key, value}, ...] (bigbio)."""
    if isinstance(raw, Mapping):
        options = {str(k).strip().upper(): v for k, v in raw.items()}
    elif isinstance(raw, list) and all(isinstance(o, Mapping) and "key" in o for o in raw):
        options = {str(o["key"]).strip().upper(): o.get("value") for o in raw}
    else:
        raise DataError(f"MCQ options must be a dict or a list of {{key, value}} dicts{_location(where)}")
    # datasets fills the keys a row lacks with None when a file mixes 4- and 5-option rows.
    return {k: _clean(v) for k, v in options.items() if v is not None}


def _letter(value: Any, schema: str, field: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{schema} {field} must be an option letter, got {value!r}{_location(where)}")
    return value.strip().upper()


def _index(value: Any, count: int, schema: str, field: str, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
        raise DataError(f"{schema} {field} must be an integer 0-{count - 1}, got {value!r}{_location(where)}")
    return LETTERS[value]


def _build(where: str, **fields: Any) -> MCQ:
    """Construct an MCQ, adding `where` to any validation error."""
    try:
        return MCQ(**fields)
    except DataError as err:
        raise DataError(f"{err}{_location(where)}") from None


def _text(value: Any) -> str | None:
    return _clean(value) if isinstance(value, str) and value.strip() else None


# --------------------------------------------------------------------------
# One reader per schema
# --------------------------------------------------------------------------


_EMBEDDED_CONTEXT = re.compile(r"^\s*(?:(?:context|abstract)\s*:\s*)?(?P<context>\S.*?)\s*\n\s*question\s*:\s*"
                               r"(?P<question>\S.*)$", re.IGNORECASE | re.DOTALL)


def split_context(question: str, context: str | None) -> tuple[str, str | None]:
    """(question, context) of a record that may carry its passage inside ``question``: PubMedQA exported
    in MedQA's schema reads ``"Context: <abstract>\\nQuestion: <question>"`` (or the abstract, then a
    ``Question:`` line). Split there, so the abstract is asked once, as the context; a record with a
    context of its own, or no ``Question:`` line, is left as it is."""
    match = None if context else _EMBEDDED_CONTEXT.match(question)
    if match is None:
        return question, context
    return _clean(match["question"]), _clean(match["context"])


def _from_normalised(record: Mapping[str, Any], where: str) -> MCQ:
    _require(record, ("question", "options", "answer"), "MCQ", where)
    question, context = split_context(_clean(record["question"]), _text(record.get("context")))
    return _build(where, question=question, options=_options_dict(record["options"], where),
                  answer=_letter(record["answer"], "MCQ", "answer", where),
                  explanation=_text(record.get("explanation")), subject=_text(record.get("subject")),
                  context=context)


def _from_medqa(record: Mapping[str, Any], where: str) -> MCQ:
    _require(record, ("question", "options", "answer_idx"), "MedQA", where)
    meta = record.get("meta_info")
    question, context = split_context(_clean(record["question"]), _text(record.get("context")))
    return _build(where, question=question, options=_options_dict(record["options"], where),
                  answer=_letter(record["answer_idx"], "MedQA", "answer_idx", where), subject=_text(meta),
                  context=context)


_ENDING_KEYS: tuple[str, ...] = tuple(f"ending{i}" for i in range(len(LETTERS)))


def _from_medqa_hf(record: Mapping[str, Any], where: str) -> MCQ:
    """GBaker's ``-hf`` layout (SWAG-like), the one lm-eval's ``medqa_4options`` reads."""
    _require(record, ("sent1", "ending0", "ending1", "label"), "MedQA -hf", where)
    options = {LETTERS[i]: _clean(record[key]) for i, key in enumerate(_ENDING_KEYS) if record.get(key) is not None}
    return _build(where, question=_clean(record["sent1"]), options=options,
                  answer=_index(record["label"], len(options), "MedQA -hf", "label", where))


def _from_lettered_columns(record: Mapping[str, Any], where: str) -> MCQ:
    """MedMCQA (opa..opd, cop 0-3) and Medbullets (opa..ope, answer_idx letter)."""
    schema = "MedMCQA" if "cop" in record else "Medbullets"
    _require(record, ("question", *_OP_KEYS[:4 if schema == "MedMCQA" else 2]), schema, where)
    options = {LETTERS[i]: _clean(record[key]) for i, key in enumerate(_OP_KEYS)
               if record.get(key) is not None and str(record[key]).strip()}
    if "cop" in record:
        cop = record.get("cop")
        if cop is None or cop == -1:
            raise DataError(f"MedMCQA record has no answer (cop={cop}); its test labels are hidden, "
                            f"use the validation split{_location(where)}")
        answer = _index(cop, len(options), schema, "cop", where)
    else:
        _require(record, ("answer_idx",), schema, where)
        answer = _letter(record["answer_idx"], schema, "answer_idx", where)
    return _build(where, question=_clean(record["question"]), options=options, answer=answer,
                  explanation=_text(record.get("exp")) or _text(record.get("explanation")),
                  subject=_text(record.get("subject_name")))


def _from_pubmedqa(record: Mapping[str, Any], where: str) -> MCQ:
    """qiaojin/PubMedQA (question, context.contexts) or bigbio's source schema (QUESTION, CONTEXTS)."""
    question = record.get("question", record.get("QUESTION"))
    contexts = record.get("CONTEXTS")
    if contexts is None and isinstance(record.get("context"), Mapping):
        contexts = record["context"].get("contexts")
    _require({"question": question, "context": contexts, "final_decision": record.get("final_decision")},
             ("question", "context", "final_decision"), "PubMedQA", where)
    if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
        raise DataError(f"PubMedQA contexts must be a list of strings{_location(where)}")
    decision = str(record["final_decision"]).strip().lower()
    answer = next((k for k, v in PUBMEDQA_OPTIONS.items() if v == decision), None)
    if answer is None:
        raise DataError(f"PubMedQA final_decision must be yes, no or maybe, got {record['final_decision']!r}"
                        f"{_location(where)}")
    return _build(where, question=_clean(question), options=dict(PUBMEDQA_OPTIONS), answer=answer,
                  # one section per line, as lm-eval's pubmedqa prompt shows the abstract
                  context="\n".join(c.strip() for c in contexts if c.strip()) or None,
                  explanation=_text(record.get("long_answer", record.get("LONG_ANSWER"))))


def _from_mmlu(record: Mapping[str, Any], where: str) -> MCQ:
    _require(record, ("question", "choices", "answer"), "MMLU", where)
    choices = record["choices"]
    if not isinstance(choices, list):
        raise DataError(f"MMLU choices must be a list, got {type(choices).__name__}{_location(where)}")
    if len(choices) > len(LETTERS):
        raise DataError(f"MMLU record has {len(choices)} choices; at most {len(LETTERS)} are supported"
                        f"{_location(where)}")
    answer = _index(record["answer"], len(choices), "MMLU", "answer", where)
    return _build(where, question=_clean(record["question"]),
                  options={LETTERS[i]: _clean(c) for i, c in enumerate(choices)}, answer=answer,
                  subject=_text(record.get("subject")))


def _from_mmlu_csv(record: Mapping[str, Any], where: str) -> MCQ:
    _require(record, MMLU_CSV_COLUMNS, "MMLU CSV", where)
    return _build(where, question=_clean(str(record["question"])),
                  options={k: _clean(str(record[k])) for k in "ABCD"},
                  answer=_letter(record["answer"], "MMLU CSV", "answer", where))


@dataclass(frozen=True)
class Schema:
    """One record layout: a name and its fields (for the error that lists them), how to recognise it, how to read it."""

    name: str
    fields: str
    matches: Callable[[Mapping[str, Any]], bool]
    read: Callable[[Mapping[str, Any], str], MCQ]


SCHEMAS: tuple[Schema, ...] = (
    Schema("MedMCQA / Medbullets", "question, opa..ope, cop (0-based) or answer_idx",
           lambda r: "opa" in r or "cop" in r, _from_lettered_columns),
    Schema("MedQA (GBaker, bigbio)", "question, options, answer_idx", lambda r: "answer_idx" in r, _from_medqa),
    Schema("MedQA -hf (GBaker 4-options-hf)", "sent1, ending0..ending3, label (0-based)",
           lambda r: "sent1" in r, _from_medqa_hf),
    Schema("PubMedQA (qiaojin, bigbio)", "question, context.contexts, final_decision",
           lambda r: "final_decision" in r, _from_pubmedqa),
    Schema("MMLU (cais/mmlu)", "question, choices, answer (0-based)", lambda r: "choices" in r, _from_mmlu),
    Schema("MMLU CSV", "question, A, B, C, D, answer letter (headerless)",
           lambda r: "A" in r and "B" in r and "options" not in r, _from_mmlu_csv),
    Schema("normalised", "question, options {A..}, answer letter", lambda r: "options" in r and "answer" in r,
           _from_normalised),
)


def accepted_schemas() -> str:
    """One line naming every schema and its fields, for error messages."""
    return "; ".join(f"{s.name} ({s.fields})" for s in SCHEMAS)


def normalize_mcq(record: Mapping[str, Any], *, where: str = "") -> MCQ:
    """Turn a raw record in any schema of :data:`SCHEMAS` into an :class:`MCQ`.

    The schema is recognised from the keys; ``where`` (e.g. ``"train.jsonl record
    7"``) is appended to error messages. A record no schema recognises gets one
    error that lists the accepted schemas.
    """
    if not isinstance(record, Mapping):
        raise DataError(f"MCQ record must be a dict, got {type(record).__name__}{_location(where)}")
    for schema in SCHEMAS:
        if schema.matches(record):
            return replace(schema.read(record, where), tags=record_tags(record))
    keys = ", ".join(map(str, list(record)[:8])) or "none"
    raise DataError(f"unrecognised MCQ record (fields: {keys}){_location(where)}; accepted schemas: "
                    f"{accepted_schemas()}")


TAG_LIMIT = 200
"""Longest text a field may have to count as a tag (a label, not a passage)."""


def record_tags(record: Mapping[str, Any]) -> dict[str, str]:
    """Every short scalar field of ``record`` (text up to :data:`TAG_LIMIT` characters, numbers, booleans)
    as text, by name: the labels a report can be grouped by (``meta_info``, ``subject_name``, ``topic``)."""
    tags = {}
    for key, value in record.items():
        if isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= TAG_LIMIT):
            tags[str(key)] = str(value).strip()
    return tags


def mcq_to_record(mcq: MCQ) -> dict[str, Any]:
    """The normalised JSON-ready form; :func:`normalize_mcq` reads it back unchanged."""
    record: dict[str, Any] = {"question": mcq.question, "options": dict(mcq.options), "answer": mcq.answer}
    for key in ("explanation", "subject", "context"):
        if getattr(mcq, key) is not None:
            record[key] = getattr(mcq, key)
    return record
