"""Dataset registry: which dataset a name means, and how its splits are read.

``open_source(name, split)`` turns a short name (``fineweb-edu``, ``medqa``,
``medmcqa``, ``bundled-general``, ``bundled-medical``, ``bundled-mcq``) or a
local path (file, folder or glob of .jsonl/.json/.parquet/.txt) into a
:class:`~pure_transformer.data.sources.DocumentSource`. Each name resolves to a
spec (:class:`HubSpec`, :class:`BundledSpec` or :class:`LocalSpec`) that knows
where the records are, what kind they are, and how to open one split of them.

Splits a dataset does not have are derived, never invented:

* a missing ``validation`` split is a deterministic slice of ``train``: the
  documents whose blake2b hash (of the text, or of the question for MCQs) is
  0 modulo ``holdout_every``; the ``train`` split then skips exactly those;
* a local ``*train*`` file's ``validation``/``test`` splits are its sibling
  files with ``train`` replaced in the name, when they exist.

The ``train`` split of an MCQ dataset gets a
:class:`~pure_transformer.data.contamination.ContaminationGuard` built from the
dataset's evaluation splits, so no evaluation question is trained on.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, ClassVar

from ..errors import DataError
from ..mcq.answer_format import AnswerFormat
from ..mcq.record import MCQ
from ..mcq.schemas import MMLU_CSV_COLUMNS, normalize_mcq
from .contamination import ContaminationGuard, eval_questions
from .local_files import BUILDERS, expand_local, has_header, named_split, sibling_files
from .sources import (READ_ERRORS, SPLITS, DocumentSource, HashSplit, HFSource, HoldOut, ListSource, RetryPolicy, Shard,
                      SourceKind, Split, _one_line, _reader, _rows, parse_error_message, parse_errors, retrying)


@dataclass(frozen=True)
class HubSpec:
    """A dataset on the Hugging Face hub, streamed."""

    name: str
    repo: str
    config: str | None
    kind: SourceKind
    hub_splits: tuple[str, ...]  # the splits the hub repo really has
    eval_splits: tuple[str, ...]  # splits whose questions training must not see
    holdout_every: int | None  # derive "validation" from "train" when the hub lacks one
    approx_train_tokens: int | None
    text_field: str = "text"
    test_from: str | None = None  # the hub split read as our test split (MedMCQA: validation, as leaderboards do)
    splits: ClassVar[tuple[str, ...]] = SPLITS

    def open(self, split: Split, shard: Shard, retry: RetryPolicy, guard: ContaminationGuard | None,
             answer_format: AnswerFormat = AnswerFormat.LETTER) -> DocumentSource:
        hub_split, holdout = _resolve_split(self.name, split, self.hub_splits, self.holdout_every, self.test_from)
        fill_guard = split == "train" and self.kind is SourceKind.MCQ and guard is None
        if fill_guard:
            guard = ContaminationGuard()

        def open_dataset() -> Any:
            # Filled here, inside the retried opener, so opening stays offline.
            if fill_guard and guard is not None and len(guard) == 0:
                for eval_split in self.eval_splits:
                    guard.add(eval_questions(_rows(self._load(eval_split), 256)))
            return self._load(hub_split)

        to_text = _reader(self.kind, holdout, guard if split == "train" else None, self.text_field, answer_format)
        return HFSource(self.name, open_dataset, to_text, shard, guard, retry)

    def mcqs(self, split: Split) -> Iterator[MCQ]:
        hub_split, holdout = _resolve_split(self.name, split, self.hub_splits, self.holdout_every, self.test_from)
        guard = None
        if split == "train":
            guard = ContaminationGuard()
            for eval_split in self.eval_splits:
                guard.add(eval_questions(_rows(self._load(eval_split), 256)))
        yield from _admitted(_rows(self._load(hub_split), 256), f"{self.name} {split}", holdout, guard)

    def _load(self, hub_split: str) -> Any:
        import datasets

        _require_hub(self.name)
        try:
            return datasets.load_dataset(self.repo, self.config, split=hub_split, streaming=True)
        except ValueError as err:  # no such config or split: asking again will not help
            raise DataError(f"cannot load '{self.name}' ({self.repo}): {_one_line(err)}") from err


OFFLINE_HINT = ("give a local file or folder in the name's place (a path works wherever a dataset name does), "
                "or a bundled-* set")
"""What every hub failure suggests; it names no flag, as each command takes the name through its own."""


@functools.cache
def hub_lookup_error() -> str | None:
    """Why the hub's host does not resolve (no network), or None. huggingface_hub would find
    out by retrying for half a minute; a failed DNS lookup is not going to heal in that time."""
    import os
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy",
                                       "ALL_PROXY", "all_proxy")):
        return None  # offline mode answers from the cache or fails at once; a proxy resolves names itself
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except socket.gaierror as e:
        return f"cannot resolve {host} ({e.strerror})"
    return None


def _require_hub(name: str) -> None:
    if (why := hub_lookup_error()) is not None:
        raise DataError(f"cannot read '{name}' from the Hugging Face Hub: {why}; offline, {OFFLINE_HINT}")


@dataclass(frozen=True)
class BundledSpec:
    """A part of the offline bundled corpus (:mod:`pure_transformer.bundled.synthetic`)."""

    name: str
    kind: SourceKind
    part: str  # "general"/"medical": text lists (+ "_validation"); "mcq": MCQs by split

    @property
    def splits(self) -> tuple[str, ...]:
        from ..bundled.synthetic import SPLITS as MCQ_SPLITS

        return MCQ_SPLITS if self.kind is SourceKind.MCQ else SPLITS

    def records(self, split: Split) -> list[Any]:
        corpus = _bundled()
        if self.kind is SourceKind.MCQ:
            return corpus.mcq[split]
        if split == "test":
            raise DataError(f"'{self.name}' has no test split; use train or validation")
        return getattr(corpus, self.part if split == "train" else f"{self.part}_validation")

    def mcqs(self, split: Split) -> Iterator[MCQ]:
        yield from self.records(split)

    def open(self, split: Split, shard: Shard, retry: RetryPolicy, guard: ContaminationGuard | None,
             answer_format: AnswerFormat = AnswerFormat.LETTER) -> DocumentSource:
        if self.kind is SourceKind.MCQ and split == "train" and guard is None:
            from ..bundled.synthetic import EVAL_SPLITS

            guard = ContaminationGuard(m.question for s in EVAL_SPLITS for m in self.records(s))
        to_text = _reader(self.kind, None, guard, answer_format=answer_format)
        return ListSource(self.name, self.records(split), to_text, shard, guard)

    @property
    def approx_train_tokens(self) -> int:
        # Countable; ~4 characters per token for English BPE vocabularies.
        to_text = _reader(self.kind, None, None)
        return sum(len(to_text(r, self.name, 0) or "") for r in self.records("train")) // 4


@dataclass(frozen=True)
class LocalSpec:
    """Local files read through the same streaming ``datasets`` path as the hub.

    ``.txt`` files are split into documents at blank lines. ``kind=None`` looks
    at the first record: a ``text`` field means text, anything else is an MCQ.
    """

    name: str
    files: tuple[Path, ...]
    kind: SourceKind | None = None
    holdout_every: int = 100
    splits: ClassVar[tuple[str, ...]] = SPLITS

    @property
    def builder(self) -> str:
        return BUILDERS[self.files[0].suffix]

    @property
    def approx_train_tokens(self) -> int:
        # Estimated from bytes (exact counting would mean reading everything);
        # JSON keys inflate it, so repeat warnings err on the quiet side.
        return sum(f.stat().st_size for f in self.files) // 4

    def open(self, split: Split, shard: Shard, retry: RetryPolicy, guard: ContaminationGuard | None,
             answer_format: AnswerFormat = AnswerFormat.LETTER) -> DocumentSource:
        files, holdout = self._files_for(split)
        kind = self.resolved_kind
        if kind is SourceKind.MCQ and split == "train" and guard is None:
            guard = self._held_out.fresh_copy()
        to_text = _reader(kind, holdout, guard if split == "train" else None, answer_format=answer_format)
        return HFSource(self.name, lambda: self._load(files), to_text, shard, guard, retry)

    def mcqs(self, split: Split) -> Iterator[MCQ]:
        files, holdout = self._files_for(split)
        guard = self._held_out.fresh_copy() if split == "train" else None
        try:
            yield from _admitted(_rows(self._load(files), 256), f"{self.name} {split}", holdout, guard)
        except parse_errors() as err:  # a malformed row past the first: evaluate --data-path reads them all
            raise DataError(parse_error_message(self.name, err)) from err

    @functools.cached_property
    def _held_out(self) -> ContaminationGuard:
        """The validation and test questions, read once per spec: each shard's guard is
        a fresh copy (each counts its own drops) of this one."""
        guard = ContaminationGuard()
        for files in self._eval_files():
            guard.add(eval_questions(_rows(self._load(files), 256)))
        return guard

    def _eval_files(self) -> list[tuple[Path, ...]]:
        """The validation and test files whose questions training must not see."""
        splits = [named_split(f) for f in self.files]
        if len(set(splits)) > 1:
            return [tuple(f for f, s in zip(self.files, splits) if s == e) for e in ("validation", "test")
                    if e in splits]
        return [sib for e in ("validation", "test") if (sib := sibling_files(self.files, e))]

    def _files_for(self, split: Split) -> tuple[tuple[Path, ...], HoldOut | HashSplit | None]:
        splits = [named_split(f) for f in self.files]
        named = set(splits)
        if len(named) > 1:  # a folder of x_train / x_dev / x_test files: each split its own files
            if None in named:
                raise DataError(f"'{self.name}' mixes files that name a split with files that do not; "
                                "give one split's files, or a folder of train/validation/test files")
            chosen = tuple(f for f, s in zip(self.files, splits) if s == split)
            if not chosen and split == "validation" and "train" in named:  # derived, as for one train file
                return tuple(f for f, s in zip(self.files, splits) if s == "train"), HoldOut(self.holdout_every, True)
            if not chosen:
                raise DataError(f"'{self.name}' has no {split} file (its files hold {', '.join(sorted(named))})")
            holdout = HoldOut(self.holdout_every, keep=False) if split == "train" and "validation" not in named \
                else None
            return chosen, holdout
        (own,) = named
        if own is None and self.resolved_kind is SourceKind.MCQ:
            # A user's one question file. Its test split is the whole file: evaluate leaves out exactly
            # the questions the checkpoint's ledger says it trained on, and scores all of a file it never
            # saw. Training reads it split by question hash, the same way wherever it is read, so a
            # run on it still leaves a test slice unseen.
            return self.files, None if split == "test" else HashSplit(split, self.name)
        if own is None and split == "test":
            raise DataError(f"'{self.name}' is text with no split in its name: it has no test split")
        if own is None or own == "train":  # a lone *_train file holds out validation by hash (DATA.md)
            has_validation = own == "train" and bool(sibling_files(self.files, "validation"))
            if split == "train":
                return self.files, None if has_validation else HoldOut(self.holdout_every, keep=False)
            if split == "validation" and not has_validation:
                return self.files, HoldOut(self.holdout_every, keep=True)
        if own == split:
            return self.files, None
        if own == "train" and (siblings := sibling_files(self.files, split)):
            return siblings, None
        if own == "train":
            raise DataError(f"'{self.name}' has no {split} split (no sibling file with '{split}' for 'train')")
        raise DataError(f"'{self.name}' is a {own} file: it has no {split} split")

    @functools.cached_property
    def resolved_kind(self) -> SourceKind:
        """``kind``, or what the first record says (read once per spec)."""
        return self.kind or self._detect_kind()

    def _detect_kind(self) -> SourceKind:
        try:
            first = next(_rows(self._load(self.files)), None)
        except parse_errors() as err:
            raise DataError(parse_error_message(self.name, err)) from err
        if first is None:
            raise DataError(f"'{self.name}' contains no records")
        return SourceKind.TEXT if isinstance(first.get("text"), str) else SourceKind.MCQ

    def _load(self, files: tuple[Path, ...]) -> Any:
        import datasets

        # A malformed line is our one `error:` line (DataError, naming the file and row); the json builder
        # would also log it as a second line of its own.
        logging.getLogger("datasets.packaged_modules.json.json").setLevel(logging.CRITICAL)

        extra: dict[str, Any] = {"sample_by": "paragraph"} if self.builder == "text" else {}
        if self.builder == "csv" and not has_header(files[0]):  # MMLU's original release: no header row
            extra = {"column_names": list(MMLU_CSV_COLUMNS)}
        if self.builder == "csv":
            _quiet_csv_failures()
        # Local files have no download count, yet the packaged json/csv/text builders send
        # one to the hub per call (a HEAD with a 3 s timeout) and a loader calls once per
        # shard: 0.15 s each when the network refuses, up to 3 s each when it hangs.
        counting, datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = datasets.config.HF_UPDATE_DOWNLOAD_COUNTS, False
        try:
            return datasets.load_dataset(
                self.builder, data_files=[str(f) for f in files], split="train", streaming=True, **extra
            )
        except StopIteration:  # datasets infers the columns from the first record, and there is none
            raise DataError(f"'{self.name}' contains no records") from None
        finally:
            datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = counting


SourceSpec = HubSpec | BundledSpec | LocalSpec


def _drop_read_failure(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Failed to read file")


def _quiet_csv_failures() -> None:
    """datasets' CSV builder logs "Failed to read file '...' with error <class ...>" before it
    raises; the DataError it becomes says the same in the one ``error:`` line."""
    logger = logging.getLogger("datasets.packaged_modules.csv.csv")
    if _drop_read_failure not in logger.filters:
        logger.addFilter(_drop_read_failure)


def _admitted(rows: Iterable[dict[str, Any]], where: str, holdout: HoldOut | HashSplit | None,
              guard: ContaminationGuard | None) -> Iterator[MCQ]:
    """Normalised MCQs of ``rows`` that the split's hash hold-out and the
    contamination guard let through."""
    for i, row in enumerate(rows):
        mcq = normalize_mcq(row, where=f"{where} record {i}")
        if (holdout is None or holdout.admits(mcq.question)) and (guard is None or guard.admits(mcq.question)):
            yield mcq


def source_kind(name: str) -> SourceKind:
    """Whether a named dataset or local path holds text or multiple-choice questions."""
    spec = resolve_source(name)
    return spec.resolved_kind if isinstance(spec, LocalSpec) else spec.kind


def load_mcqs(name: str, split: Split, limit: int | None = None) -> list[MCQ]:
    """The normalised questions of one split of an MCQ dataset (hub name,
    bundled set or local files), with the same split rules as :func:`open_source`."""
    spec = resolve_source(name)
    check_split(spec, split)
    if source_kind(name) is not SourceKind.MCQ:
        raise DataError(f"'{name}' is a text dataset, not multiple-choice questions")
    hint = f"; offline, {OFFLINE_HINT}" if isinstance(spec, HubSpec) else ""
    for failures in itertools.count(1):
        try:
            out = list(islice(spec.mcqs(split), limit))
            break
        except READ_ERRORS as err:
            retrying(name, failures, RetryPolicy(), err, time.sleep, hint)
    if not out:
        raise DataError(f"'{name}' has no questions in its {split} split")
    return out


def _resolve_split(
    name: str, split: str, hub_splits: tuple[str, ...], holdout_every: int | None, test_from: str | None = None
) -> tuple[str, HoldOut | None]:
    """Map our split to a hub split plus, for derived validation, a hash filter."""
    if split == "test" and test_from is not None:
        return test_from, None
    derived = holdout_every is not None and "validation" not in hub_splits
    if split == "validation" and derived:
        return "train", HoldOut(holdout_every, keep=True)
    if split == "train" and derived:
        return "train", HoldOut(holdout_every, keep=False)
    if split not in hub_splits:
        raise DataError(f"'{name}' has no usable {split} split (has: {', '.join(hub_splits)})")
    return split, None


@functools.lru_cache(maxsize=1)
def _bundled() -> Any:
    from ..bundled.synthetic import bundled_corpus

    return bundled_corpus(seed=0)


MMLU_MEDICAL: tuple[str, ...] = ("anatomy", "clinical_knowledge", "college_biology", "college_medicine",
                                  "medical_genetics", "professional_medicine")
"""The six MMLU subjects of the Open Medical-LLM Leaderboard (cais/mmlu configs)."""

KNOWN_SOURCES: dict[str, SourceSpec] = {
    spec.name: spec
    for spec in (
        HubSpec(
            name="fineweb-edu",
            repo="HuggingFaceFW/fineweb-edu",
            config="sample-10BT",
            kind=SourceKind.TEXT,
            hub_splits=("train",),
            eval_splits=(),
            holdout_every=1000,  # ~9.7k of the sample's ~9.7M documents
            approx_train_tokens=10_000_000_000,  # the config's name: ~10B GPT-2 tokens
        ),
        HubSpec(
            name="medqa",
            repo="GBaker/MedQA-USMLE-4-options",
            config=None,
            kind=SourceKind.MCQ,
            hub_splits=("train", "test"),
            eval_splits=("test",),
            holdout_every=20,  # ~500 of 10,178 train questions become validation
            # 10,178 questions x ~250 tokens (vignette + 4 options + answer, no explanation).
            approx_train_tokens=2_500_000,
        ),
        HubSpec(
            name="medmcqa",
            repo="openlifescienceai/medmcqa",
            config=None,
            kind=SourceKind.MCQ,
            # The test split's answers are hidden, so it is unusable as text or for scoring.
            hub_splits=("train", "validation"),
            eval_splits=("validation", "test"),
            holdout_every=None,
            test_from="validation",
            # 182,822 questions x ~100 tokens (short stems, options, brief explanation).
            approx_train_tokens=18_000_000,
        ),
        HubSpec(
            name="medqa5",
            repo="bigbio/med_qa",
            config="med_qa_en_source",  # the original 5-option release
            kind=SourceKind.MCQ,
            hub_splits=("train", "validation", "test"),
            eval_splits=("validation", "test"),
            holdout_every=None,
            approx_train_tokens=2_600_000,
        ),
        HubSpec(
            name="pubmedqa",
            repo="qiaojin/PubMedQA",
            config="pqa_labeled",  # 1,000 expert-labelled questions, all in its one split
            kind=SourceKind.MCQ,
            hub_splits=("train",),
            eval_splits=("train",),
            holdout_every=None,
            approx_train_tokens=None,
            test_from="train",
        ),
        HubSpec(
            name="medbullets",
            repo="LangAGI-Lab/medbullets",  # 5 options (opa..ope), answer_idx, explanation
            config=None,
            kind=SourceKind.MCQ,
            hub_splits=("train", "test"),
            eval_splits=("test",),
            holdout_every=None,
            approx_train_tokens=None,
        ),
        *(HubSpec(
            name=f"mmlu-{subject.replace('_', '-')}",
            repo="cais/mmlu",
            config=subject,
            kind=SourceKind.MCQ,
            hub_splits=("dev", "validation", "test"),
            eval_splits=("validation", "test"),
            holdout_every=None,
            approx_train_tokens=None,
        ) for subject in MMLU_MEDICAL),
        BundledSpec("bundled-general", SourceKind.TEXT, "general"),
        BundledSpec("bundled-medical", SourceKind.TEXT, "medical"),
        BundledSpec("bundled-mcq", SourceKind.MCQ, "mcq"),
    )
}


def resolve_source(name: str) -> SourceSpec:
    """The spec for a known short name or a local file/folder/glob."""
    if name in KNOWN_SOURCES:
        return KNOWN_SOURCES[name]
    looks_like_path = any(c in name for c in "/\\*?[") or Path(name).suffix in BUILDERS or Path(name).exists()
    if not looks_like_path:
        known = ", ".join(KNOWN_SOURCES)
        raise DataError(f"unknown dataset '{name}'; known: {known}, or a local path")
    files = expand_local(name)
    stats = [f.stat() for f in files]
    return _local_spec(name, files, tuple((st.st_mtime_ns, st.st_size) for st in stats))


@functools.lru_cache(maxsize=64)
def _local_spec(name: str, files: tuple[Path, ...], stats: tuple[tuple[int, int], ...]) -> LocalSpec:
    """One spec per set of unchanged files, so that the shards of a loader (16 by default)
    share its detected kind and held-out questions instead of each reading the files
    again; ``stats`` (mtime, size per file) makes an edited file a new spec."""
    del stats  # part of the cache key only
    return LocalSpec(name=name, files=files)


def open_source(
    name: str,
    split: Split = "train",
    *,
    shard: Shard = Shard(),
    retry: RetryPolicy = RetryPolicy(),
    guard: ContaminationGuard | None = None,
    answer_format: AnswerFormat = AnswerFormat.LETTER,
) -> DocumentSource:
    """Open one shard of one split of a named dataset or local path.

    MCQ records become text in ``answer_format`` (:mod:`pure_transformer.mcq.answer_format`).

    ``guard`` replaces the default contamination guard of MCQ training splits
    (the dataset's own evaluation questions); pass a bigger one to also block
    questions from other benchmarks.
    """
    spec = resolve_source(name)
    check_split(spec, split)
    return spec.open(split, shard, retry, guard, answer_format)


def check_split(spec: SourceSpec, split: str) -> None:
    """One error line for a split the dataset does not have (the bundled MCQs also have ``compositional``)."""
    if split not in spec.splits:
        raise DataError(f"unknown split '{split}'; use one of {', '.join(spec.splits)}")


def approx_train_tokens(name: str) -> int | None:
    """Roughly how many tokens one epoch of the train split holds, if known."""
    return resolve_source(name).approx_train_tokens
