"""Mixing several document sources into one tokenised stream, resumably.

Per source, a :class:`ShuffleWindow` reads a window of documents, tokenises
them in batches and yields them in a seeded permutation. A :class:`Mixture`
then decides, document by document, which source to draw from:

* ``weight_by="tokens"`` (default) is deterministic: it picks the source with
  the largest token deficit ``w_s * T_total - T_s``, so the achieved token
  shares match the weights to within one document at every point of the
  stream. This matters here because MedQA items (~250 tokens) are much shorter
  than FineWeb-Edu pages (~1,000): a per-document coin flip at 15% would give
  MedQA only ~4% of the tokens.
* ``weight_by="documents"`` flips a seeded coin per document with the given
  probabilities, like ``datasets.interleave_datasets``.

``stopping`` follows ``interleave_datasets``: ``None`` cycles every source
forever (the trainer stops at its token budget), ``"first_exhausted"`` ends
the stream when any source finishes its first pass, ``"all_exhausted"`` when
every source has finished at least one pass (the finished ones restart).

Why a window shuffle rather than a shuffle buffer: a buffer's contents are
lost on resume (HF ``IterableDataset.shuffle`` has this problem), and storing
10,000 documents in a checkpoint is too big. A window's state is just the
source state at the window start, the window index and an offset: resuming
re-reads and re-tokenises that one window and permutes it identically. The
cost is a coarser shuffle (documents never move across window boundaries),
which is fine for web text that is not sorted by topic.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from ..errors import DataError
from ..mcq.answer_format import AnswerFormat
from .packing import ENCODE_BATCH, Encoder, encode_documents
from .registry import open_source
from .sources import DocumentSource, RetryPolicy, Shard

WeightBy = Literal["tokens", "documents"]
Stopping = Literal["first_exhausted", "all_exhausted"]
REPEAT_WARNING_THRESHOLD = 4.0  # passes over a source before repetition is worth a warning


class DataRepeatWarning(UserWarning):
    """A source will be seen many times over the planned token budget."""


@dataclass(frozen=True)
class SourceWeight:
    """One mixture component: a source name (or local path) and its share."""

    name: str
    weight: float


DEFAULT_SOURCES: tuple[SourceWeight, ...] = (SourceWeight("fineweb-edu", 0.85), SourceWeight("medqa", 0.15))


@dataclass(frozen=True)
class MixtureConfig:
    """What to mix and how; weights are normalised to sum to 1."""

    sources: tuple[SourceWeight, ...] = DEFAULT_SOURCES
    weight_by: WeightBy = "tokens"
    stopping: Stopping | None = None
    shuffle_buffer: int | None = 10_000  # documents per shuffle window; None = stream order
    seed: int = 0
    answer_format: AnswerFormat = AnswerFormat.LETTER  # how MCQ records become text
    whole_mcqs: bool = False  # never split an MCQ across packed blocks when it fits one (Packer.whole)

    def __post_init__(self) -> None:
        if not self.sources:
            raise DataError("the mixture has no sources")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise DataError(f"a source appears twice in the mixture: {', '.join(names)}")
        bad = [s for s in self.sources if not s.weight > 0]
        if bad:
            raise DataError(f"mixture weight of '{bad[0].name}' must be > 0, got {bad[0].weight}")
        if self.weight_by not in get_args(WeightBy):
            raise DataError(f"weight_by must be one of {', '.join(get_args(WeightBy))}, got '{self.weight_by}'")
        if self.stopping is not None and self.stopping not in get_args(Stopping):
            raise DataError(f"stopping must be None or one of {', '.join(get_args(Stopping))}, got '{self.stopping}'")
        if self.shuffle_buffer is not None and self.shuffle_buffer < 1:
            raise DataError(f"shuffle_buffer must be >= 1 or None, got {self.shuffle_buffer}")

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    @property
    def probabilities(self) -> list[float]:
        total = sum(s.weight for s in self.sources)
        return [s.weight / total for s in self.sources]


def parse_mixture(spec: str) -> tuple[SourceWeight, ...]:
    """``"fineweb-edu:0.85,medqa:0.15"`` -> source weights (a bare name weighs 1)."""
    out = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, weight = item.rpartition(":")
        if not sep:
            name, weight = item, "1"
        try:
            out.append(SourceWeight(name.strip(), float(weight)))
        except ValueError:
            raise DataError(f"bad mixture weight in '{item}'; expected name:weight") from None
    if not out:
        raise DataError(f"empty mixture '{spec}'")
    return tuple(out)


@dataclass(frozen=True)
class TokenizedDoc:
    tokens: np.ndarray  # (n,) int32, no EOT
    epoch: int


class ShuffleWindow:
    """Tokenised documents of one source, permuted within fixed-size windows.

    ``size=None`` keeps stream order (windows then only batch the tokenizer).
    Documents from an earlier epoch always come before those of a later one,
    so a window straddling the end of a pass does not blur where it ended.
    """

    def __init__(self, source: DocumentSource, encoder: Encoder, size: int | None, seed: int, stream_id: int) -> None:
        self.source = source
        self._encoder = encoder
        self._size = size or ENCODE_BATCH
        self._shuffle = size is not None
        self._seed = (seed, stream_id, source.shard.index)
        self._start_state = source.state_dict()
        self._index = 0
        self._offset = 0
        self._docs: list[TokenizedDoc] = []
        self._it: Iterator[Any] | None = None

    def __iter__(self) -> ShuffleWindow:
        return self

    def __next__(self) -> TokenizedDoc:
        if not self._docs:
            self._fill()
        doc = self._docs[self._offset]
        self._offset += 1
        if self._offset == len(self._docs):
            # Step to the next window now, so a saved state never points at a spent one.
            self._start_state = self.source.state_dict()
            self._index += 1
            self._offset = 0
            self._docs = []
        return doc

    def _fill(self) -> None:
        if self._it is None:
            self._it = iter(self.source)
        docs = [next(self._it) for _ in range(self._size)]
        tokens = encode_documents(self._encoder, [d.text for d in docs])
        epochs = np.array([d.epoch for d in docs])
        order = np.arange(len(docs))
        if self._shuffle:
            order = np.random.default_rng([*self._seed, self._index]).permutation(len(docs))
            order = order[np.argsort(epochs[order], kind="stable")]
        self._docs = [TokenizedDoc(tokens[i], int(epochs[i])) for i in order]

    def state_dict(self) -> dict[str, Any]:
        return {"source": self._start_state, "window": self._index, "offset": self._offset}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._start_state = state["source"]
        self._index = state["window"]
        self.source.load_state_dict(self._start_state)
        self._it = None
        self._docs = []
        self._offset = 0
        if state["offset"]:
            self._fill()  # re-read the window and land on the same document
            self._offset = state["offset"]


class Mixture:
    """Draws tokenised documents from several windows; yields ``(source index, tokens)``."""

    def __init__(self, streams: Sequence[ShuffleWindow], config: MixtureConfig) -> None:
        self.streams = list(streams)
        self.config = config
        self._weights = np.array(config.probabilities)
        n = len(self.streams)
        self.tokens = [0] * n  # tokens taken per source, counting the EOT each document adds
        self.docs = [0] * n
        self.epochs = [0] * n  # epoch of the last document taken from each source
        self.exhausted = [False] * n  # finished a first pass
        self.done = False
        self._rng = np.random.default_rng(config.seed) if config.weight_by == "documents" else None

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        while not self.done:
            s = self._pick()
            doc = next(self.streams[s])
            if doc.epoch > 0 and not self.exhausted[s]:
                self.exhausted[s] = True
                stop = self.config.stopping
                if stop == "first_exhausted" or (stop == "all_exhausted" and all(self.exhausted)):
                    self.done = True
                    return
            self.tokens[s] += len(doc.tokens) + 1
            self.docs[s] += 1
            self.epochs[s] = doc.epoch
            yield s, doc.tokens

    def _pick(self) -> int:
        if self._rng is not None:
            return int(self._rng.choice(len(self.streams), p=self._weights))
        tokens = np.array(self.tokens, dtype=np.float64)
        deficit = self._weights * tokens.sum() - tokens
        return int(np.argmax(deficit))  # ties go to the earliest source

    def state_dict(self) -> dict[str, Any]:
        return {
            "tokens": list(self.tokens),
            "docs": list(self.docs),
            "epochs": list(self.epochs),
            "exhausted": list(self.exhausted),
            "done": self.done,
            "rng": self._rng.bit_generator.state if self._rng is not None else None,
            "streams": [w.state_dict() for w in self.streams],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["streams"]) != len(self.streams):
            raise DataError(f"saved mixture has {len(state['streams'])} sources, this one {len(self.streams)}")
        self.tokens = list(state["tokens"])
        self.docs = list(state["docs"])
        self.epochs = list(state["epochs"])
        self.exhausted = list(state["exhausted"])
        self.done = state["done"]
        if self._rng is not None:
            self._rng.bit_generator.state = state["rng"]
        for window, window_state in zip(self.streams, state["streams"]):
            window.load_state_dict(window_state)


def build_mixture(
    config: MixtureConfig, encoder: Encoder, shard: Shard = Shard(), retry: RetryPolicy = RetryPolicy()
) -> Mixture:
    """The training mixture for one shard: every source's train split, windowed."""
    windows = []
    for i, s in enumerate(config.sources):
        source = open_source(s.name, "train", shard=shard, retry=retry, answer_format=config.answer_format)
        windows.append(ShuffleWindow(source, encoder, config.shuffle_buffer, config.seed, stream_id=i))
    return Mixture(windows, config)


@dataclass(frozen=True)
class RepeatEstimate:
    name: str
    share: float
    token_budget: int
    source_tokens: int  # one pass over the source
    repeats: float  # passes needed to supply share * token_budget


def estimate_repeats(
    config: MixtureConfig, token_budget: int, sizes: Mapping[str, int | None] | None = None
) -> list[RepeatEstimate]:
    """How many passes over each source of known size a token budget implies.

    ``sizes`` overrides the built-in estimates (see ``registry.approx_train_tokens``).
    """
    from .registry import approx_train_tokens

    out = []
    for source, share in zip(config.sources, config.probabilities):
        size = sizes[source.name] if sizes is not None and source.name in sizes else approx_train_tokens(source.name)
        if size:
            out.append(RepeatEstimate(source.name, share, token_budget, size, share * token_budget / size))
    return out


def warn_on_repeats(
    config: MixtureConfig,
    token_budget: int,
    sizes: Mapping[str, int | None] | None = None,
    threshold: float = REPEAT_WARNING_THRESHOLD,
) -> list[RepeatEstimate]:
    """Warn (``DataRepeatWarning``) about each source that would repeat more than ``threshold`` times."""
    heavy = [e for e in estimate_repeats(config, token_budget, sizes) if e.repeats > threshold]
    for e in heavy:
        warnings.warn(
            f"{e.name} would repeat ~{e.repeats:.0f}x over {_human(e.token_budget)} tokens at "
            f"{e.share:.0%} (one pass is ~{_human(e.source_tokens)} tokens); expect memorisation",
            DataRepeatWarning,
            stacklevel=2,
        )
    return heavy


def _human(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(int(n))
