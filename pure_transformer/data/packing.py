"""Packing tokenised documents into fixed-length training blocks.

Every document enters the stream as ``[EOT, *tokens]``: EOT works as the
separator between documents and as the beginning-of-document token (so the
model learns to predict a document's first token from EOT alone, and prompts at
inference should start with ``eot_id`` too). The stream is cut into blocks of
``seq_len + 1`` tokens; a model trains on ``input = block[:-1]`` and
``target = block[1:]``. Blocks do not overlap and nothing is dropped: the tail
of a document that does not fit carries into the next block, and that carried
remainder is part of the packer's state.

Each block also carries ``position_ids`` that restart at 0 at every document
start (and at the block start, for a document continued from the previous
block), which is what document masking and per-document RoPE positions need,
and the number of tokens each source contributed.

Everything works on numpy arrays, one small loop iteration per document piece,
never per token.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

ENCODE_BATCH = 256  # documents per encode_batch call: amortises the call, bounds memory
LOOKAHEAD_BLOCKS = 16  # with whole sources, blocks of documents kept queued to fill gaps from


class Encoder(Protocol):
    """The part of :class:`pure_transformer.tokenizer.bpe.Tokenizer` the pipeline needs."""

    separator_id: int
    """The id every packed document starts with (``Tokenizer.separator_id``: our end-of-text)."""

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...


def encode_documents(encoder: Encoder, texts: Sequence[str], batch_size: int = ENCODE_BATCH) -> list[np.ndarray]:
    """Tokenise ``texts`` in batches; one int32 array per document (no EOT added)."""
    out: list[np.ndarray] = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        out.extend(np.asarray(ids, dtype=np.int32) for ids in encoder.encode_batch(batch))
    return out


@dataclass(frozen=True)
class Block:
    """One packed training row."""

    tokens: np.ndarray  # (seq_len + 1,) int64
    position_ids: np.ndarray  # (seq_len + 1,) int64; 0 where a document (or the block) starts
    source_tokens: np.ndarray  # (num_sources,) int64; sums to seq_len + 1


@dataclass
class _Piece:
    tokens: np.ndarray  # (n,) int32; starts with EOT unless it continues a document
    source: int


class Packer:
    """Turns (document tokens, source index) pairs into :class:`Block` rows.

    ``add`` queues a document; ``pop`` returns the next full block or ``None``
    when fewer than ``seq_len + 1`` tokens are queued.
    """

    def __init__(self, seq_len: int, eot_id: int, num_sources: int = 1, whole: frozenset[int] = frozenset()) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.block_len = seq_len + 1
        self.eot_id = eot_id
        self.num_sources = num_sources
        self.whole = whole
        """Sources whose documents are never split when they fit a block (MCQs: a question cut from its
        answer teaches the answer without the question). Other documents fill the gaps."""
        self._pieces: deque[_Piece] = deque()
        self._queued = 0  # tokens in self._pieces

    @property
    def queued_tokens(self) -> int:
        return self._queued

    def add(self, tokens: np.ndarray | Sequence[int], source: int = 0) -> None:
        doc = np.empty(len(tokens) + 1, dtype=np.int32)  # (n + 1,)
        doc[0] = self.eot_id
        doc[1:] = tokens
        self._pieces.append(_Piece(doc, source))
        self._queued += len(doc)

    def pop(self) -> Block | None:
        # With whole sources, two blocks' worth stay queued: the documents after the head are the
        # ones that can fill a gap the head does not fit.
        if self._queued < self.block_len * (LOOKAHEAD_BLOCKS if self.whole else 1):
            return None
        taken: list[_Piece] = []
        need = self.block_len
        while need > 0:
            i = self._next_piece(need)
            piece = self._pieces[i]
            if len(piece.tokens) <= need:
                taken.append(piece)
                del self._pieces[i]
                need -= len(piece.tokens)
            else:
                taken.append(_Piece(piece.tokens[:need], piece.source))
                self._pieces[i] = _Piece(piece.tokens[need:], piece.source)
                need = 0
        self._queued -= self.block_len

        tokens = np.concatenate([p.tokens for p in taken]).astype(np.int64)
        # Every piece starts a document except possibly the first, which then
        # starts the block; either way its positions restart at 0.
        positions = np.concatenate([np.arange(len(p.tokens), dtype=np.int64) for p in taken])
        counts = np.zeros(self.num_sources, dtype=np.int64)
        for p in taken:
            counts[p.source] += len(p.tokens)
        return Block(tokens, positions, counts)

    def _next_piece(self, need: int) -> int:
        """Which queued piece goes next into a block with ``need`` tokens left: the head, in stream
        order, unless it is a whole-source document that would be split; then the first queued piece
        that fits, else the first one that may be split (the head if none may)."""
        head = self._pieces[0]
        if not self.whole or len(head.tokens) <= need or not self._keep_whole(head):
            return 0
        fits = next((i for i, p in enumerate(self._pieces) if len(p.tokens) <= need), None)
        if fits is not None:
            return fits
        return next((i for i, p in enumerate(self._pieces) if not self._keep_whole(p)), 0)

    def _keep_whole(self, piece: _Piece) -> bool:
        # a whole document (it starts with EOT) of a whole source that fits an empty block
        return piece.source in self.whole and piece.tokens[0] == self.eot_id and len(piece.tokens) <= self.block_len

    def remainder(self) -> np.ndarray:
        """The queued tokens not yet in a block, in order."""
        if not self._pieces:
            return np.zeros(0, dtype=np.int32)
        return np.concatenate([p.tokens for p in self._pieces])

    def state_dict(self) -> dict[str, Any]:
        # At most LOOKAHEAD_BLOCKS blocks plus one document: small enough for meta.json.
        return {"pieces": [[p.source, p.tokens.tolist()] for p in self._pieces]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pieces = deque(_Piece(np.asarray(toks, dtype=np.int32), src) for src, toks in state["pieces"])
        self._queued = sum(len(p.tokens) for p in self._pieces)


def pack_token_stream(
    docs: Iterable[np.ndarray | Sequence[int]], seq_len: int, eot_id: int
) -> Iterator[Block]:
    """Pack already-tokenised documents (one source); the final partial block is not emitted."""
    packer = Packer(seq_len, eot_id)
    for doc in docs:
        packer.add(doc)
        while (block := packer.pop()) is not None:
            yield block


def pack_texts(
    texts: Iterable[str], encoder: Encoder, seq_len: int, batch_size: int = ENCODE_BATCH
) -> Iterator[Block]:
    """Tokenise on the fly in batches and pack: the tokenise+pack path, for benchmarks."""

    def token_docs() -> Iterator[np.ndarray]:
        batch: list[str] = []
        for text in texts:
            batch.append(text)
            if len(batch) == batch_size:
                yield from encode_documents(encoder, batch, batch_size)
                batch = []
        yield from encode_documents(encoder, batch, batch_size)

    yield from pack_token_stream(token_docs(), seq_len, encoder.separator_id)
