"""Document sources: resumable, shardable text streams over one split of a dataset.

A :class:`DocumentSource` is an endless iterator of :class:`Document` that loops
over epochs, counts what it read, and saves/restores its exact position with
``state_dict()`` / ``load_state_dict()``. Which dataset a name means, and how
its splits map to files or hub splits, lives in :mod:`pure_transformer.data.registry`
(``open_source(name, split)`` turns a short name or local path into a source).

Hub datasets and local files share one code path, :class:`HFSource`:
``datasets.load_dataset(..., streaming=True)`` sharded with
``split_dataset_by_node`` and resumed with the ``IterableDataset.state_dict()``
of datasets >= 2.18, with retries on transient errors (:class:`RetryPolicy`).
The bundled offline corpus is a Python list, :class:`ListSource`, sharded by
index modulo. Either way the shards of a split are disjoint and together cover
every document.

A missing ``validation`` split is derived as a deterministic slice of ``train``
(:class:`HoldOut`, :func:`in_holdout`): the documents whose blake2b hash (of the
text, or of the question for MCQs) is 0 modulo ``every``; the ``train`` split
then skips exactly those.

MCQ records are normalised by :func:`~pure_transformer.mcq.record.normalize_mcq`
and rendered with ``AnswerFormat.pretrain_text`` (the run's answer format); in the ``train`` split a
:class:`~pure_transformer.data.contamination.ContaminationGuard` drops any
question that also appears in the dataset's evaluation splits. From the second
epoch on, each question shows its options in a new order (:func:`epoch_options`),
so a source that repeats cannot be learnt as "this question -> letter C".
"""

from __future__ import annotations

import hashlib
import itertools
import random
import socket
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

import pyarrow as pa

from ..errors import DataError
from ..mcq.answer_format import AnswerFormat
from ..mcq.record import MCQ, shuffle_options
from ..mcq.schemas import normalize_mcq
from .contamination import ContaminationGuard, normalize_question

Split = Literal["train", "validation", "test"]
SPLITS: tuple[str, ...] = ("train", "validation", "test")

# Where read errors come from: ConnectionError, TimeoutError, huggingface_hub's
# HfHubHTTPError and the fsspec/aiohttp socket errors are all OSErrors. Only the
# transient ones among them are retried (is_transient).
READ_ERRORS: tuple[type[BaseException], ...] = (OSError,)
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_TRANSIENT_NAMES = frozenset({"ReadTimeout", "ConnectTimeout", "Timeout", "ReadTimeoutError", "ChunkedEncodingError",
                              "ClientPayloadError", "ServerDisconnectedError", "IncompleteRead"})
_TRANSIENT_WORDS = ("reset", "aborted", "timed out", "timeout", "broken pipe", "closed", "temporarily")


def is_transient(err: BaseException) -> bool:
    """Worth another try: a timeout, a dropped connection, HTTP 429 or 5xx. Offline
    mode, a missing repository, file or config, authentication and a failed DNS
    lookup (no network) fail at once: retrying them only delays the same error."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        status = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(status, int):
            return status in RETRY_STATUS or status >= 500
        if "offline" in str(e).lower() or isinstance(e, (socket.gaierror, FileNotFoundError, PermissionError)):
            return False
        if isinstance(e, (TimeoutError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError)) or \
                type(e).__name__ in _TRANSIENT_NAMES:
            return True
        if type(e) is ConnectionError and any(w in str(e).lower() for w in _TRANSIENT_WORDS):
            return True  # fsspec/aiohttp report a dropped stream as a bare ConnectionError
        e = e.__cause__ or e.__context__
    return False


def retrying(name: str, failures: int, retry: "RetryPolicy", err: BaseException,
             sleep: Callable[[float], None], hint: str = "") -> None:
    """After failure number ``failures`` of reading ``name``: wait and say so, or raise
    a one-line :class:`DataError` (ending in ``hint``) when the error is permanent or
    the tries are spent."""
    if not is_transient(err):
        raise DataError(f"cannot read '{name}': {_one_line(err)}{hint}") from err
    if failures >= retry.tries:
        raise DataError(f"reading '{name}' failed {failures} times in a row; "
                        f"last error: {_one_line(err)}{hint}") from err
    delay = retry.delay(failures)
    print(f"warning: reading '{name}': {_one_line(err)}; retrying ({failures}/{retry.tries - 1}) in {delay:g} s",
          file=sys.stderr, flush=True)
    sleep(delay)

ToText = Callable[[Any, str, int], str | None]
"""(record, where it came from, epoch) -> training text, or None to skip the record."""


class SourceKind(Enum):
    """What the records are: running text, or multiple-choice questions."""

    TEXT = "text"
    MCQ = "mcq"


@dataclass(frozen=True)
class Document:
    """One training document and the pass over its source that produced it."""

    text: str
    epoch: int


def first_pass(docs: Iterable[Document]) -> Iterator[Document]:
    """The documents of one pass over a source (sources loop forever)."""
    return itertools.takewhile(lambda d: d.epoch == 0, docs)


@dataclass(frozen=True)
class Shard:
    """This reader's slice of a split: documents ``index`` mod ``count``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise DataError(f"shard {self.index} is outside 0..{self.count - 1}")

    def __str__(self) -> str:
        return f"shard {self.index}/{self.count}"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient read errors: waits base, 2*base, 4*base, ..."""

    tries: int = 5
    base_delay_s: float = 1.0

    def delay(self, failure: int) -> float:
        return self.base_delay_s * 2 ** (failure - 1)


def in_holdout(key: str, every: int) -> bool:
    """Deterministic 1-in-``every`` selection, stable across processes and Python versions."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % every == 0


@dataclass(frozen=True)
class HoldOut:
    """Keep (``keep=True``) or skip the hash-selected validation slice of a split."""

    every: int
    keep: bool

    def admits(self, key: str) -> bool:
        return in_holdout(key, self.every) == self.keep


_HASH_SPLIT_NOTED: set[str] = set()

HASH_SPLIT_PERCENT: dict[str, range] = {"test": range(0, 20), "validation": range(20, 25), "train": range(25, 100)}
"""How training divides a question file that names no split, by its question's hash mod 100: 75%
train, 5% validation, and 20% never trained on. Evaluation scores the whole file as its test split
and leaves out the questions the checkpoint's ledger holds (:mod:`pure_transformer.data.ledger`)."""


@dataclass(frozen=True)
class HashSplit:
    """Keep the questions whose hash falls in ``split``'s bucket of :data:`HASH_SPLIT_PERCENT`."""

    split: str
    source: str = ""  # named in the one note printed when the first question is read

    def admits(self, key: str) -> bool:
        if self.source and self.source not in _HASH_SPLIT_NOTED:
            # Printed on the first readable question, so a malformed file still fails in one line.
            _HASH_SPLIT_NOTED.add(self.source)
            print(f"note: '{self.source}' names no split (train, validation/val/dev, test); training splits its "
                  "questions by hash (75% train, 5% validation, 20% never trained on)", file=sys.stderr, flush=True)
        # Hashed in the guard's normal form: a re-cased or re-punctuated copy lands in the same split.
        digest = hashlib.blake2b(normalize_question(key).encode("utf-8"), digest_size=8, person=b"split").digest()
        return int.from_bytes(digest, "little") % 100 in HASH_SPLIT_PERCENT[self.split]


# --------------------------------------------------------------------------- sources


class DocumentSource(ABC):
    """An endless, resumable stream of documents from one shard of one split.

    Iterating loops over the shard forever; each :class:`Document` carries the
    epoch it came from, so a consumer can see when the source wrapped. The
    subclass keeps ``position`` (JSON-serialisable, replaced rather than
    mutated) current as it reads. Call ``load_state_dict`` before iterating.
    """

    def __init__(
        self,
        name: str,
        to_text: ToText,
        shard: Shard,
        guard: ContaminationGuard | None,
        start: Any,
    ) -> None:
        self.name = name
        self.shard = shard
        self.guard = guard
        self.epoch = 0
        self.docs_read = 0  # documents yielded, over all epochs
        self.position = self._start = start
        self._docs_in_epoch = 0
        self._to_text = to_text

    def __iter__(self) -> Iterator[Document]:
        while True:
            for text in self._read_epoch():
                self.docs_read += 1
                self._docs_in_epoch += 1
                yield Document(text, self.epoch)
            if self._docs_in_epoch == 0:
                # Looping over nothing would hang the trainer; say so instead.
                raise DataError(f"source '{self.name}' ({self.shard}) has no documents")
            self.epoch += 1
            self._docs_in_epoch = 0
            self.position = self._start

    @abstractmethod
    def _read_epoch(self) -> Iterator[str]:
        """Yield the rest of the current epoch from ``position``, keeping it current."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "docs_read": self.docs_read,
            "docs_in_epoch": self._docs_in_epoch,
            "dropped": self.guard.dropped if self.guard is not None else 0,
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = state["epoch"]
        self.docs_read = state["docs_read"]
        self._docs_in_epoch = state["docs_in_epoch"]
        if self.guard is not None:
            self.guard.dropped = state["dropped"]
        self.position = state["position"]


class ListSource(DocumentSource):
    """In-memory records, sharded by index modulo; the position is an index."""

    def __init__(
        self,
        name: str,
        records: Sequence[Any],
        to_text: ToText,
        shard: Shard = Shard(),
        guard: ContaminationGuard | None = None,
    ) -> None:
        super().__init__(name, to_text, shard, guard, start=0)
        self._records = records[shard.index :: shard.count]

    def _read_epoch(self) -> Iterator[str]:
        while self.position < len(self._records):
            self.position += 1
            index = self.position - 1
            text = self._to_text(self._records[index], f"{self.name} item {index}", self.epoch)
            if text is not None:
                yield text


class HFSource(DocumentSource):
    """A streaming ``datasets.IterableDataset``, with retries on transient errors.

    ``open_dataset`` builds the unsharded dataset; it is called lazily (and
    retried) so that constructing a source never touches the network. After a
    failure the dataset is rewound to the state after the last good record, so
    a retry neither repeats nor skips a document. ``sleep`` is injectable so
    tests need not wait. The position is ``{"hf": IterableDataset.state_dict()
    or None at the epoch start, "records": records read this epoch}``.
    """

    def __init__(
        self,
        name: str,
        open_dataset: Callable[[], Any],
        to_text: ToText,
        shard: Shard = Shard(),
        guard: ContaminationGuard | None = None,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(name, to_text, shard, guard, start={"hf": None, "records": 0})
        self._open_dataset = open_dataset
        self._retry = retry
        self._sleep = sleep
        self._ds: Any = None
        self._epoch_start: dict[str, Any] | None = None

    def _dataset(self) -> Any:
        if self._ds is None:
            from datasets.distributed import split_dataset_by_node

            ds = self._open_dataset()
            if self.shard.count > 1:
                ds = split_dataset_by_node(ds, rank=self.shard.index, world_size=self.shard.count)
            self._epoch_start = ds.state_dict()
            self._ds = ds
        return self._ds

    def _read_epoch(self) -> Iterator[str]:
        failures = 0
        while True:
            try:
                ds = self._dataset()
                # A loaded state sticks to the dataset, so every (re)start loads one.
                ds.load_state_dict(self.position["hf"] or self._epoch_start)
                for record in _rows(ds):
                    records = self.position["records"] + 1
                    self.position = {"hf": ds.state_dict(), "records": records}
                    failures = 0
                    where = f"{self.name} record {records} ({self.shard}, epoch {self.epoch})"
                    text = self._to_text(record, where, self.epoch)
                    if text is not None:
                        yield text
                return
            except READ_ERRORS as err:
                failures += 1
                retrying(self.name, failures, self._retry, err, self._sleep)
            except parse_errors() as err:
                # Malformed JSON/Parquet/CSV, or files of one source with different columns.
                raise DataError(parse_error_message(self.name, err)) from err


def parse_errors() -> tuple[type[BaseException], ...]:
    """What a malformed JSON/Parquet/CSV file raises while streaming.

    A function, not a constant: ``datasets`` costs a second to import, and the bundled
    sources and every command that only reads a checkpoint never need it. An ``except``
    clause evaluates it only when an exception is being matched.
    """
    from datasets.table import CastError
    from pandas.errors import ParserError  # datasets reads CSV with pandas

    return (pa.ArrowInvalid, CastError, ParserError)


def parse_error_message(name: str, err: BaseException) -> str:
    """One line for a file ``name`` that ``err`` (one of :func:`parse_errors`) says is malformed,
    with the line the parser names: pandas says "Error tokenizing data. C error: Expected 6
    fields in line 3, saw 7", of which the part after "C error:" is the news."""
    from pandas.errors import ParserError

    if isinstance(err, ParserError):
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"could not parse '{name}': {text.split('C error: ')[-1]}"
    return f"could not parse '{name}': {_one_line(err)}"


def _rows(ds: Any, batch_size: int = 1) -> Iterator[dict[str, Any]]:
    """The records of a streaming dataset, one by one.

    ``ds.iter()`` rather than ``iter(ds)``: inside a DataLoader worker the latter
    re-splits the data by worker, on top of our explicit sharding. With
    ``batch_size=1``, ``ds.state_dict()`` is exact after every record.
    """
    for batch in ds.iter(batch_size=batch_size):
        columns = list(batch.values())
        for i in range(len(columns[0])):
            yield {key: column[i] for key, column in zip(batch, columns)}


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


# --------------------------------------------------------------------------- record -> text


def _text_field(field: str, holdout: HoldOut | HashSplit | None) -> ToText:
    def to_text(record: Any, where: str, epoch: int) -> str | None:
        text = record.get(field) if isinstance(record, dict) else record
        if not isinstance(text, str):
            raise DataError(f"{where}: expected a string field '{field}'")
        text = text.strip()
        if not text or (holdout is not None and not holdout.admits(text)):
            return None
        return text

    return to_text


def _reader(kind: SourceKind, holdout: HoldOut | HashSplit | None, guard: ContaminationGuard | None, field: str = "text",
            answer_format: AnswerFormat = AnswerFormat.LETTER) -> ToText:
    return _mcq_text(holdout, guard, answer_format) if kind is SourceKind.MCQ else _text_field(field, holdout)


def epoch_options(mcq: MCQ, epoch: int) -> MCQ:
    """``mcq`` as shown in ``epoch``: as given in epoch 0, then with its options
    permuted by a seed of (epoch, question), so every pass is reproducible and a
    resumed run renders the same text. Repeated passes then teach reading the
    options instead of memorising each question's letter."""
    if epoch == 0:
        return mcq
    return shuffle_options(mcq, random.Random(f"options-{epoch}-{mcq.question}"))


def _mcq_text(holdout: HoldOut | HashSplit | None, guard: ContaminationGuard | None, answer_format: AnswerFormat) -> ToText:
    def to_text(record: Any, where: str, epoch: int) -> str | None:
        mcq = record if isinstance(record, MCQ) else normalize_mcq(record, where=where)
        if holdout is not None and not holdout.admits(mcq.question):
            return None
        if guard is not None and not guard.admits(mcq.question):
            return None
        return answer_format.pretrain_text(epoch_options(mcq, epoch))

    return to_text
