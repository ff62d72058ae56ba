"""Tests for the byte-level BPE tokenizer: training, loading, the tiktoken fast
path's agreement with HF tokenizers, and training-text sources."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from pure_transformer.errors import DataError, TokenizerError, UserError
from pure_transformer.tokenizer.bpe import EOT, PAD, Tokenizer, iter_training_texts, train_tokenizer

_WORDS = (
    "patient presents with fever cough dyspnea tachycardia hypotension lactate sepsis "
    "antibiotics vancomycin ceftriaxone diagnosis management next best step the a of "
    "and in is was year-old man woman history examination shows which following most "
    "likely mechanism myocardial infarction troponin ECG ST-elevation aspirin heparin"
).split()
_ODDITIES = ["café", "naïve", "中文", "日本語", "🩺", "💊", "Ωmega", "x²", "μg/kg", "°C", "—", "…"]


def _random_doc(rng: random.Random) -> str:
    """A pseudo-sentence mixing vocabulary words, numbers, punctuation, unicode and odd whitespace."""
    parts = []
    for _ in range(rng.randint(3, 40)):
        roll = rng.random()
        if roll < 0.75:
            parts.append(rng.choice(_WORDS))
        elif roll < 0.85:
            parts.append(str(rng.randint(0, 100000)))
        elif roll < 0.93:
            parts.append(rng.choice(_ODDITIES))
        else:
            parts.append(rng.choice(["(", ")", ",", ".", "'s", "'ll", "/", "--", "?!", "<|endoftext|>"]))
        parts.append(rng.choice([" ", " ", " ", "  ", "\n", "\t", " \n ", "   "]))
    return "".join(parts)


def _corpus(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [_random_doc(rng) for _ in range(n)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Tokenizer, Path]:
    out = tmp_path_factory.mktemp("tok")
    tok = train_tokenizer(_corpus(2000, seed=0), 1000, out, show_progress=False)
    return tok, out


# ---------------------------------------------------------------- round trip and specials


@pytest.mark.parametrize(
    "text",
    [
        "The patient's BP is 120/80 mmHg.",
        "Café naïve résumé — 中文字符 and emoji 🩺💊🧬",
        "spaces    in   runs \t\ttabs   ",
        "line one\nline two\n\n\nline five\r\n",
        "",
        " leading space and trailing ",
        "never seen: Ελληνικά русский 한국어 \u200b\u00a0",
    ],
)
@pytest.mark.fast
def test_round_trip(trained: tuple[Tokenizer, Path], text: str) -> None:
    tok, _ = trained
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.fast
def test_special_tokens_are_distinct_and_not_parsed_from_text(trained: tuple[Tokenizer, Path]) -> None:
    tok, _ = trained
    assert tok.eot_id != tok.pad_id
    assert tok.hf.token_to_id(EOT) == tok.eot_id
    assert tok.hf.token_to_id(PAD) == tok.pad_id
    assert 0 <= tok.eot_id < tok.vocab_size and 0 <= tok.pad_id < tok.vocab_size
    ids = tok.encode(f"end {EOT} pad {PAD}")
    assert tok.eot_id not in ids and tok.pad_id not in ids
    assert tok.decode([tok.eot_id]) == EOT


@pytest.mark.fast
def test_trained_vocab_size(trained: tuple[Tokenizer, Path]) -> None:
    tok, _ = trained
    assert 256 + 2 < tok.vocab_size <= 1000


# ---------------------------------------------------------------- tiktoken fast path


def _hf_ids(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tok.hf.encode_batch(texts, add_special_tokens=False)]


@pytest.mark.fast
def test_fast_path_matches_hf_on_varied_strings(trained: tuple[Tokenizer, Path]) -> None:
    tok, _ = trained
    assert tok.backend == "tiktoken"
    texts = _corpus(300, seed=1)  # unseen in training
    assert tok.encode_batch(texts) == _hf_ids(tok, texts)
    assert tok.encode_batch(texts, num_threads=2) == _hf_ids(tok, texts)
    assert [tok.encode(t) for t in texts[:50]] == _hf_ids(tok, texts[:50])


@pytest.mark.fast
def test_fast_path_matches_hf_on_long_documents(trained: tuple[Tokenizer, Path]) -> None:
    tok, _ = trained
    # Long concatenations exercise whitespace runs at document boundaries.
    docs = ["\n\n".join(_corpus(50, seed=s)) for s in range(2, 22)]
    assert tok.encode_batch(docs) == _hf_ids(tok, docs)


@pytest.mark.fast
def test_fast_path_refused_for_non_byte_level_tokenizer() -> None:
    import tokenizers
    from tokenizers import models, pre_tokenizers, trainers

    hf = tokenizers.Tokenizer(models.BPE(unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["[UNK]", "</s>"], show_progress=False)
    hf.train_from_iterator(_corpus(100, seed=3), trainer=trainer)
    tok = Tokenizer(hf)
    assert tok.backend == "tokenizers"
    assert tok.eot_id == hf.token_to_id("</s>")
    assert tok.pad_id == tok.eot_id  # no pad token: falls back to EOT
    assert tok.encode("fever and cough") == hf.encode("fever and cough", add_special_tokens=False).ids


# ---------------------------------------------------------------- loading


@pytest.mark.fast
def test_load_folder_and_file_give_same_tokenizer(trained: tuple[Tokenizer, Path]) -> None:
    tok, out = trained
    text = "A 45-year-old woman presents with fever 🩺"
    for source in (out, str(out), str(out / "tokenizer.json")):
        loaded = Tokenizer.load(source)
        assert loaded.encode(text) == tok.encode(text)
        assert (loaded.eot_id, loaded.pad_id, loaded.vocab_size) == (tok.eot_id, tok.pad_id, tok.vocab_size)


@pytest.mark.fast
def test_transformers_loads_the_folder(trained: tuple[Tokenizer, Path]) -> None:
    transformers = pytest.importorskip("transformers")
    tok, out = trained
    texts = [t.replace(EOT, "") for t in _corpus(50, seed=4)]
    for cls in (transformers.PreTrainedTokenizerFast, transformers.AutoTokenizer):
        hf_tok = cls.from_pretrained(str(out))
        assert hf_tok.eos_token == EOT and hf_tok.pad_token == PAD
        assert (hf_tok.eos_token_id, hf_tok.pad_token_id) == (tok.eot_id, tok.pad_id)
        assert [hf_tok.encode(t, add_special_tokens=False) for t in texts] == tok.encode_batch(texts)
        assert hf_tok.decode(tok.encode(texts[0])) == texts[0]


def _assert_one_line(exc: pytest.ExceptionInfo[BaseException], *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.fast
def test_load_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "tokenizer.json"
    with pytest.raises(TokenizerError) as exc:
        Tokenizer.load(str(missing))
    _assert_one_line(exc, str(missing), "file not found")
    with pytest.raises(TokenizerError) as exc:
        Tokenizer.load(tmp_path)  # a folder without tokenizer.json
    _assert_one_line(exc, str(tmp_path / "tokenizer.json"), "file not found")


@pytest.mark.fast
@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b'{"version": "1.0", "model": 3}', b""])
def test_load_corrupt_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_bytes(content)
    with pytest.raises(TokenizerError) as exc:
        Tokenizer.load(path)
    _assert_one_line(exc, str(path), "not a valid tokenizer.json")
    assert isinstance(exc.value, UserError)


@pytest.mark.fast
def test_load_unknown_hub_name_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once at import, which may already have happened.
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(TokenizerError) as exc:
        Tokenizer.load("no-such-owner-xyz/no-such-tokenizer")
    _assert_one_line(exc, "no-such-owner-xyz/no-such-tokenizer", "hub", "local path")


# ---------------------------------------------------------------- training validation


@pytest.mark.fast
@pytest.mark.parametrize("vocab_size", [0, 100, 258])
def test_vocab_size_too_small(tmp_path: Path, vocab_size: int) -> None:
    with pytest.raises(TokenizerError) as exc:
        train_tokenizer(["some text"], vocab_size, tmp_path, show_progress=False)
    _assert_one_line(exc, str(vocab_size), "too small")


@pytest.mark.fast
def test_empty_training_text(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="empty"):
        train_tokenizer([], 300, tmp_path, show_progress=False)


# ---------------------------------------------------------------- training text sources


@pytest.mark.fast
def test_train_from_jsonl_and_txt(tmp_path: Path) -> None:
    docs = _corpus(200, seed=5)
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"body": d, "id": i}) + "\n" for i, d in enumerate(docs)))
    txt = tmp_path / "notes.txt"
    txt.write_text("first note line\ncontinues here\n\nsecond note\n\n\nthird note\n")

    from_jsonl = list(iter_training_texts([str(jsonl)], text_field="body"))
    assert from_jsonl == [d for d in docs if d.strip()]
    from_txt = list(iter_training_texts([str(txt)]))
    assert [t.strip() for t in from_txt] == ["first note line\ncontinues here", "second note", "third note"]

    both = iter_training_texts([str(jsonl), str(txt)], text_field="body", max_docs=150)
    tok = train_tokenizer(both, 600, tmp_path / "tok", show_progress=False)
    assert tok.backend == "tiktoken"
    assert Tokenizer.load(tmp_path / "tok").encode(docs[0]) == tok.encode(docs[0])


@pytest.mark.fast
def test_folders_and_globs(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"part{i}.jsonl").write_text(json.dumps({"text": f"document {i}"}) + "\n")
    (tmp_path / "README.md").write_text("ignored: not a supported type")
    assert list(iter_training_texts([str(tmp_path)])) == ["document 0", "document 1", "document 2"]
    assert list(iter_training_texts([str(tmp_path / "part[12].jsonl")])) == ["document 1", "document 2"]


@pytest.mark.fast
def test_missing_inputs_fail_up_front(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        iter_training_texts([str(tmp_path / "absent.jsonl")])
    _assert_one_line(exc, "absent.jsonl", "not found")
    with pytest.raises(DataError, match="no .txt"):
        iter_training_texts([str(tmp_path / "*.parquet")])
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type"):
        iter_training_texts([str(tmp_path / "data.csv")])


@pytest.mark.fast
def test_missing_text_field(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"content": "x"}) + "\n")
    with pytest.raises(DataError, match="'text'"):
        list(iter_training_texts([str(path)]))


@pytest.mark.fast
def test_bundled_corpus_texts() -> None:
    from itertools import islice

    from pure_transformer.bundled.synthetic import training_texts

    docs = list(islice(training_texts(), 20))
    assert len(docs) == 20
    assert all(isinstance(d, str) and d.strip() for d in docs)
