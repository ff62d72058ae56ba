"""Byte-level BPE tokenizer: training, loading and fast encoding.

The tokenizer is trained and stored with Hugging Face ``tokenizers`` (a single
``tokenizer.json``, plus the two small config files ``transformers`` needs to
load the folder). Encoding, the hot path of data preparation, goes through a
``tiktoken`` encoding built from the same vocabulary and merges, which is about
six times faster per core and gives the same ids; a self-check at construction
falls back to ``tokenizers`` whenever that equivalence cannot be trusted.

Two special tokens exist: :data:`EOT` separates documents and :data:`PAD` fills
unused positions. Neither is ever produced by encoding ordinary text, so a
document that happens to contain the string ``"<|endoftext|>"`` cannot forge a
document boundary.
"""

from __future__ import annotations

import glob
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from pathlib import Path
from typing import Any

import tiktoken
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from ..errors import DataError, TokenizerError, writing
from .roles import TokenRoles, read_roles

logger = logging.getLogger(__name__)

EOT = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (EOT, PAD)
# A multiple of 64 keeps the embedding and output matmuls on efficient tile sizes.
DEFAULT_VOCAB_SIZE = 50304
TINY_VOCAB_SIZE = 4096

# Hub tokenizers name their end-of-text token differently; the first one found wins.
_EOT_CANDIDATES = (EOT, "</s>", "<eos>")

# The split pattern of HF's ByteLevel pre-tokenizer (use_regex=True), written the
# way tiktoken writes it for GPT-2: possessive quantifiers and the `\s++$`
# alternative only make matching faster and split text into the same pieces.
GPT2_SPLIT_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)

# Strings the fast-path self-check encodes with both backends: contractions,
# digits, punctuation runs, unusual whitespace and multi-byte characters are
# where a pattern or merge-order mismatch would show first.
_PROBE_TEXTS = (
    "The patient's BP is 120/80 mmHg; HR 96/min, T 38.5°C.",
    "A 45-year-old man presents with   three spaces,\ttabs\t\tand\n\nnewlines \n",
    "I'll, you've, we're, she'd, it's, they'm DON'T   ",
    "Naïve café, Ελληνικά, русский, 中文字符, 日本語, 한국어, emoji 🩺💊🧬!",
    "x\u00a0y\u2009z\u3000w\u200bv\r\n\x0bend\x0c",
    "((a+b)*c) -> [d]{e} <|endoftext|> <|pad|> ### 12345678901234567890",
)

# File suffix -> the `datasets` builder that reads it.
_SUPPORTED_SUFFIXES = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_SUPPORTED_NAMES = ".txt/.jsonl/.json/.parquet"


class Tokenizer:
    """A byte-level BPE tokenizer with a tiktoken fast path for encoding.

    Wraps a ``tokenizers.Tokenizer`` (which stays the source of truth for the
    vocabulary and for decoding). ``backend`` says which library encodes:
    ``"tiktoken"`` or ``"tokenizers"``.
    """

    def __init__(self, hf: tokenizers.Tokenizer, *, source: str = "<in memory>", roles: TokenRoles | None = None
                 ) -> None:
        self.source = source
        self._hf = hf
        # Specials must never be parsed out of document text (see module docstring).
        self._hf.encode_special_tokens = True
        if roles is None:  # ours: end-of-text starts every document, ends generation, pads without <|pad|>
            eot = _find_eot_id(hf, source)
            pad_id = hf.token_to_id(PAD)
            # GPT-2-style hub tokenizers have no pad token; padded positions are
            # masked out of the loss anyway, so reusing EOT is harmless.
            roles = TokenRoles(start_id=eot, stop_ids=(eot,), pad_id=eot if pad_id is None else pad_id)
        self.roles = roles
        self.eot_id = roles.stop_ids[0]
        """End of text: the first id generation stops at."""
        self.pad_id = roles.pad_id
        self.stop_ids = frozenset(roles.stop_ids)
        """Generation ends at any of these (Qwen: ``<|endoftext|>`` and ``<|im_end|>``)."""
        self.start_ids = [] if roles.start_id is None else [roles.start_id]
        """What every document and prompt starts with: ``[eot]`` for ours, ``[<|begin_of_text|>]``
        for Llama-3, ``[]`` for Qwen. A list, so ``tok.start_ids + tok.encode(text)`` reads as the input."""
        self.separator_id = roles.start_id if roles.start_id is not None else self.eot_id
        """The id between packed documents: the start id, or end-of-text where there is none."""
        self.chat_template = roles.chat_template
        self._fast, reason = _build_tiktoken(hf)
        self.backend = "tiktoken" if self._fast is not None else "tokenizers"
        if reason:
            logger.warning("tokenizer %s: encoding with HF tokenizers (slower): %s", source, reason)

    @classmethod
    def load(cls, name_or_path: str | Path, *, imported: bool = False) -> Tokenizer:
        """Load from a folder holding ``tokenizer.json``, a ``tokenizer.json`` path, or a hub name.
        ``imported``: an open model's folder, read as transformers reads it (:mod:`.roles`)."""
        path = Path(name_or_path).expanduser()
        file = path / "tokenizer.json" if path.is_dir() else path
        if file.is_file():
            hf = _read_tokenizer_file(file)
            return cls(hf, source=str(file), roles=read_roles(hf, file.parent, imported=imported))
        if path.is_dir() or _looks_like_local_path(str(name_or_path)):
            raise TokenizerError(f"cannot load tokenizer from '{file}': file not found")
        return cls(_from_hub(str(name_or_path)), source=f"hub:{name_or_path}")

    @property
    def vocab_size(self) -> int:
        """Number of token ids, specials included (may be below the size asked for in training)."""
        return self._hf.get_vocab_size(with_added_tokens=True)

    @property
    def hf(self) -> tokenizers.Tokenizer:
        """The underlying ``tokenizers.Tokenizer``."""
        return self._hf

    @property
    def tiktoken_encoding(self) -> tiktoken.Encoding | None:
        """The tiktoken encoding behind the fast path; ``None`` on the tokenizers backend."""
        return self._fast

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; no special tokens are added or recognised."""
        if self._fast is not None:
            return self._fast.encode_ordinary(text)
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str], *, num_threads: int = 1) -> list[list[int]]:
        """Token ids of each text. ``num_threads`` applies to the tiktoken backend only;
        HF tokenizers sizes its own pool (``RAYON_NUM_THREADS``)."""
        if self._fast is None:
            return [e.ids for e in self._hf.encode_batch(texts, add_special_tokens=False)]
        if num_threads <= 1:
            # tiktoken's batch call goes through a thread pool even for one
            # thread, which costs more than encoding a short text.
            return [self._fast.encode_ordinary(text) for text in texts]
        return self._fast.encode_ordinary_batch(texts, num_threads=num_threads)

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``; special tokens are kept as their literal strings."""
        return self._hf.decode(ids, skip_special_tokens=False)

    def save(self, out_dir: str | Path) -> Path:
        """Write ``tokenizer.json`` and the transformers config files into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in self.files().items():
            if name != "generation_config.json":  # the model's, not the tokenizer's: a checkpoint keeps it
                (out / name).write_text(text)
        if self.roles.config is None:
            _write_transformers_files(out, eos=self._hf.id_to_token(self.eot_id),
                                      pad=self._hf.id_to_token(self.pad_id))
        return out

    def files(self) -> dict[str, str]:
        """What a checkpoint keeps of this tokenizer (name -> text): ``tokenizer.json``, and an
        imported model's ``tokenizer_config.json`` and ``generation_config.json``, whose roles
        and chat template :meth:`load` reads back."""
        out = {"tokenizer.json": self._hf.to_str()}
        if (config := self.roles.saved_config()) is not None:
            out["tokenizer_config.json"] = json.dumps(config, indent=2) + "\n"
        if self.roles.generation is not None:
            out["generation_config.json"] = json.dumps(self.roles.generation, indent=2) + "\n"
        return out

    def __repr__(self) -> str:
        return f"Tokenizer(source={self.source!r}, vocab_size={self.vocab_size}, backend={self.backend!r})"


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    out_dir: str | Path,
    *,
    min_frequency: int = 2,
    show_progress: bool = True,
) -> Tokenizer:
    """Train a byte-level BPE on ``texts`` and save it to ``out_dir``.

    Writes ``tokenizer.json`` plus ``tokenizer_config.json`` and
    ``special_tokens_map.json``, so ``transformers.AutoTokenizer`` can load
    the folder too.
    """
    minimum = 256 + len(SPECIAL_TOKENS) + 1
    if vocab_size < minimum:
        raise TokenizerError(
            f"vocab_size {vocab_size} is too small: a byte-level BPE needs at least {minimum} "
            f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens + 1 merge)"
        )
    # ignore_merges: a piece that is itself in the vocabulary becomes that one
    # token. tiktoken always does this, so the two backends agree by design.
    hf = tokenizers.Tokenizer(models.BPE(ignore_merges=True))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        # All 256 bytes up front, so any input (even unseen scripts) encodes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    counted = _CountingIterator(texts)
    hf.train_from_iterator(counted, trainer=trainer)
    if counted.count == 0:
        raise TokenizerError("cannot train tokenizer: the training text is empty (no documents)")
    if hf.get_vocab_size() < vocab_size:
        # BPE stops when no pair occurs min_frequency times: the corpus has no more merges to give.
        print(f"warning: the trained vocabulary has {hf.get_vocab_size()} tokens, fewer than the {vocab_size} asked "
              f"for: {counted.count} documents hold no further pair seen {min_frequency}+ times; give more text "
              "(--input) or a smaller --vocab-size", file=sys.stderr)

    out = Path(out_dir)
    with writing(out, (Exception,)):  # tokenizers' save raises a bare Exception with the OS's words
        out.mkdir(parents=True, exist_ok=True)
        hf.save(str(out / "tokenizer.json"))
        _write_transformers_files(out)
    return Tokenizer(hf, source=str(out / "tokenizer.json"))


def iter_training_texts(
    inputs: list[str],
    *,
    text_field: str = "text",
    max_docs: int | None = None,
) -> Iterator[str]:
    """Documents to train a tokenizer on.

    Each input is a ``.txt`` (one document per blank-line-separated paragraph), ``.jsonl``,
    ``.json`` or ``.parquet`` file (``text_field`` of each record), a folder or
    glob of such files, or ``hf:owner/name[:config]`` for a hub dataset.
    Inputs are checked up front, so a missing path fails before training starts.
    The bundled offline corpus is :func:`pure_transformer.bundled.synthetic.training_texts`.
    """
    sources = [source for spec in inputs for source in _expand_input(spec)]
    docs = chain.from_iterable(_read_source(source, text_field) for source in sources)
    return islice((doc for doc in docs if doc.strip()), max_docs)


# --------------------------------------------------------------------------- loading


def _read_tokenizer_file(path: Path) -> tokenizers.Tokenizer:
    try:
        return tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for parse errors
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TokenizerError(
            f"cannot load tokenizer from '{path}': not a valid tokenizer.json ({detail})"
        ) from None


def _looks_like_local_path(name: str) -> bool:
    """Whether ``name`` is clearly meant as a file path rather than a hub id (``owner/name``)."""
    return (
        name.endswith(".json")
        or name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or "\\" in name
    )


def _from_hub(name: str) -> tokenizers.Tokenizer:
    try:
        return tokenizers.Tokenizer.from_pretrained(name)
    except Exception as exc:  # the hub client raises many error types; all mean "not available"
        raise TokenizerError(
            f"cannot load tokenizer '{name}': no such local path, and the Hugging Face hub "
            f"could not be reached or has no such tokenizer ({type(exc).__name__})"
        ) from None


def _find_eot_id(hf: tokenizers.Tokenizer, source: str) -> int:
    for token in _EOT_CANDIDATES:
        token_id = hf.token_to_id(token)
        if token_id is not None:
            return token_id
    raise TokenizerError(
        f"tokenizer {source} has no end-of-text token (looked for {', '.join(_EOT_CANDIDATES)})"
    )


def _write_transformers_files(out: Path, eos: str = EOT, pad: str = PAD) -> None:
    """The two files that let ``PreTrainedTokenizerFast.from_pretrained(out)`` find the specials."""
    specials = {"bos_token": eos, "eos_token": eos, "pad_token": pad}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **specials,
        "add_prefix_space": False,
        # Otherwise transformers rewrites " ." to "." on decode and round trips break.
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")


# --------------------------------------------------------------------------- tiktoken fast path


def _build_tiktoken(hf: tokenizers.Tokenizer) -> tuple[tiktoken.Encoding | None, str]:
    """A tiktoken encoding equivalent to ``hf``, or ``(None, why not)``."""
    spec = json.loads(hf.to_str())
    reason = _unsupported_reason(spec)
    if reason:
        return None, reason
    model = spec["model"]
    byte_of_char = {char: byte for byte, char in enumerate(_gpt2_byte_chars())}
    specials = {t["content"]: t["id"] for t in spec["added_tokens"]}
    ranks: dict[bytes, int] = {}
    for token, token_id in model["vocab"].items():
        if token in specials:
            continue
        try:
            ranks[bytes(byte_of_char[char] for char in token)] = token_id
        except KeyError:
            return None, f"vocabulary entry {token!r} is not byte-level encoded"
    if any(bytes([b]) not in ranks for b in range(256)):
        return None, "the vocabulary does not contain all 256 single bytes"
    reason = _merge_order_problem(model, ranks, byte_of_char)
    if reason:
        return None, reason

    try:
        encoding = tiktoken.Encoding(
            name="pure_transformer_bpe",
            pat_str=GPT2_SPLIT_PATTERN,
            mergeable_ranks=ranks,
            special_tokens=specials,
        )
    except ValueError as exc:  # e.g. two tokens sharing an id
        return None, f"tiktoken rejected the vocabulary ({exc})"
    mismatch = _first_mismatch(hf, encoding, ranks)
    if mismatch is not None:
        return None, f"self-check failed: the two backends disagree on {mismatch!r}"
    return encoding, ""


def _unsupported_reason(spec: dict[str, Any]) -> str:
    """Why ``spec`` (a parsed tokenizer.json) cannot be mirrored by tiktoken; empty if it can."""
    model = spec.get("model") or {}
    pre = spec.get("pre_tokenizer") or {}
    if model.get("type") != "BPE":
        return f"model type {model.get('type')!r} is not BPE"
    if spec.get("normalizer"):
        return "a normalizer is set"
    if pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        return "the pre-tokenizer is not a regex ByteLevel"
    if pre.get("add_prefix_space"):
        return "the ByteLevel pre-tokenizer adds a prefix space"
    if model.get("dropout") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        return "BPE dropout or subword prefixes/suffixes are set"
    if any(not t.get("special") for t in spec.get("added_tokens", [])):
        return "non-special added tokens would be matched inside text"
    return ""


def _merge_order_problem(
    model: dict[str, Any], ranks: dict[bytes, int], byte_of_char: dict[str, int]
) -> str:
    """tiktoken merges the pair whose *result* has the lowest id; HF merges the pair
    listed first. They agree when each merge creates a new token with a larger id
    than every earlier merge's token, which the HF trainer does by construction."""
    previous = -1
    for merge in model["merges"]:
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        merged = bytes(byte_of_char[char] for char in left + right)
        token_id = ranks.get(merged)
        if token_id is None or token_id <= previous:
            return f"token ids are not in merge order (at merge {left!r} + {right!r})"
        previous = token_id
    return ""


def _first_mismatch(
    hf: tokenizers.Tokenizer, encoding: tiktoken.Encoding, ranks: dict[bytes, int]
) -> str | None:
    """Encode probes with both backends; return the first text they disagree on.

    Besides the fixed probes, every vocabulary entry that is valid UTF-8 is
    encoded on its own: that is where "whole piece in vocab" shortcuts and
    merge-order differences would diverge. It costs well under a second at 50K.
    """
    texts = list(_PROBE_TEXTS)
    for token in ranks:
        try:
            texts.append(token.decode("utf-8"))
        except UnicodeDecodeError:
            continue
    hf_ids = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    fast_ids = [encoding.encode_ordinary(text) for text in texts]
    for text, expected, got in zip(texts, hf_ids, fast_ids):
        if expected != got:
            return text
    return None


def _gpt2_byte_chars() -> list[str]:
    """The printable character GPT-2's byte-level BPE uses for each byte 0..255.

    Printable Latin-1 bytes stand for themselves; the others (controls, space,
    soft hyphen...) are shifted to code points 256 and up, in byte order.
    """
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    chars, shifted = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + shifted))
            shifted += 1
    return chars


# --------------------------------------------------------------------------- training text


class _CountingIterator:
    """Passes items through and counts them, to detect an empty training corpus."""

    def __init__(self, items: Iterable[str]) -> None:
        self._items = iter(items)
        self.count = 0

    def __iter__(self) -> _CountingIterator:
        return self

    def __next__(self) -> str:
        item = next(self._items)
        self.count += 1
        return item


def _expand_input(spec: str) -> list[str | Path]:
    """Files (or one ``hf:`` id) named by ``spec``; raises DataError if there are none."""
    if spec.startswith("hf:"):
        return [spec]
    if any(char in spec for char in "*?["):
        matches = [Path(p) for p in sorted(glob.glob(spec, recursive=True)) if Path(p).is_file()]
        files = [p for p in matches if p.suffix in _SUPPORTED_SUFFIXES]
        if not files:
            raise DataError(f"training input '{spec}': no {_SUPPORTED_NAMES} files match")
        return list(files)
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _SUPPORTED_SUFFIXES)
        if not files:
            raise DataError(f"training input '{spec}': folder has no {_SUPPORTED_NAMES} files")
        return list(files)
    if not path.is_file():
        raise DataError(f"training input '{spec}' not found")
    if path.suffix not in _SUPPORTED_SUFFIXES:
        raise DataError(f"training input '{spec}': unsupported file type (use {_SUPPORTED_NAMES})")
    return [path]


def _read_source(source: str | Path, text_field: str) -> Iterator[str]:
    import datasets  # heavy import, only paid when files or hub data are read

    if isinstance(source, str):  # "hf:owner/name[:config]"
        name, _, config = source[len("hf:") :].partition(":")
        try:
            rows = datasets.load_dataset(name, config or None, split="train", streaming=True)
        except Exception as exc:  # offline, unknown name, bad config: all one message
            raise DataError(f"cannot open hub dataset '{name}': {type(exc).__name__}") from None
    else:
        builder = _SUPPORTED_SUFFIXES[source.suffix]
        # Plain text is split on blank lines, so each paragraph is one document.
        extra = {"sample_by": "paragraph"} if builder == "text" else {}
        rows = datasets.load_dataset(builder, data_files=str(source), split="train", streaming=True, **extra)
        if builder == "text":
            text_field = "text"

    for i, row in enumerate(rows):
        text = row.get(text_field)
        if not isinstance(text, str):
            text = _mcq_text(row, f"training input '{source}' record {i}", text_field)
        yield text


def _mcq_text(row: dict, where: str, text_field: str) -> str:
    """An MCQ record (any schema evaluate reads) as the text a tokenizer should see: its context,
    question, options and answer, and its explanation (the letter format's training text)."""
    from ..mcq.answer_format import AnswerFormat
    from ..mcq.schemas import normalize_mcq

    try:
        return AnswerFormat.LETTER.pretrain_text(normalize_mcq(row, where=where))
    except DataError:
        raise DataError(f"{where}: a record has no text field '{text_field}' and is not an MCQ") from None
