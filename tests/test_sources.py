"""Document sources: local formats, splits, sharding, resume and retries."""

from __future__ import annotations

import json
from itertools import islice, takewhile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import IterableDataset

from pure_transformer.data.registry import open_source
from pure_transformer.data.sources import HFSource, RetryPolicy, Shard, _text_field, in_holdout
from pure_transformer.errors import DataError
from pure_transformer.mcq.answer_format import AnswerFormat
from pure_transformer.mcq.schemas import normalize_mcq

DOCS = [f"document number {i} about topic {i % 7}" for i in range(300)]


def first_epoch(source) -> list[str]:
    return [d.text for d in takewhile(lambda d: d.epoch == 0, source)]


def expected_train(docs: list[str], every: int = 100) -> list[str]:
    return [d for d in docs if not in_holdout(d, every)]


@pytest.fixture
def text_dir(tmp_path, write_jsonl):
    """The same 300 documents as two jsonl files, plus a file the folder reader must ignore."""
    write_jsonl(tmp_path / "docs" / "a.jsonl", ({"text": t} for t in DOCS[:180]))
    write_jsonl(tmp_path / "docs" / "b.jsonl", ({"text": t} for t in DOCS[180:]))
    (tmp_path / "docs" / "README.md").write_text("not data")
    return tmp_path / "docs"


@pytest.mark.fast
def test_local_jsonl_train_and_validation_partition_the_file(text_dir):
    train = first_epoch(open_source(str(text_dir / "a.jsonl"), "train"))
    validation = first_epoch(open_source(str(text_dir / "a.jsonl"), "validation"))
    assert train == expected_train(DOCS[:180])
    assert validation == [d for d in DOCS[:180] if in_holdout(d, 100)]
    assert validation, "the hash hold-out should select some of 180 documents"


@pytest.mark.fast
def test_folder_and_glob_read_all_supported_files_in_order(text_dir):
    assert first_epoch(open_source(str(text_dir), "train")) == expected_train(DOCS)
    assert first_epoch(open_source(str(text_dir / "*.jsonl"), "train")) == expected_train(DOCS)


@pytest.mark.fast
def test_parquet_and_txt(tmp_path):
    pq.write_table(pa.table({"text": DOCS[:50]}), tmp_path / "d.parquet")
    assert first_epoch(open_source(str(tmp_path / "d.parquet"))) == expected_train(DOCS[:50])

    # Text files hold one document per paragraph (blank-line separated).
    (tmp_path / "d.txt").write_text("\n\n".join(DOCS[:50]) + "\n")
    assert first_epoch(open_source(str(tmp_path / "d.txt"))) == expected_train(DOCS[:50])


@pytest.mark.fast
def test_medqa_hub_schema_file_from_write_bundled(bundled_dir):
    records = [json.loads(line) for line in (bundled_dir / "medqa_train.jsonl").open()]
    assert "answer_idx" in records[0], "write_bundled should use the MedQA hub schema"
    source = open_source(str(bundled_dir / "medqa_train.jsonl"), "train")
    texts = first_epoch(source)
    # The sibling medqa_{validation,test}.jsonl are the eval splits: no hold-out of
    # train, only exact eval questions are dropped.
    expected = [AnswerFormat.LETTER.pretrain_text(normalize_mcq(r)) for r in records]
    assert len(texts) == len(expected) - source.guard.dropped
    assert set(texts) <= set(expected)

    validation = first_epoch(open_source(str(bundled_dir / "medqa_train.jsonl"), "validation"))
    val_records = [json.loads(line) for line in (bundled_dir / "medqa_validation.jsonl").open()]
    assert validation == [AnswerFormat.LETTER.pretrain_text(normalize_mcq(r)) for r in val_records]


@pytest.mark.fast
def test_bundled_sources(bundled):
    assert first_epoch(open_source("bundled-general")) == [t.strip() for t in bundled.general if t.strip()]
    assert first_epoch(open_source("bundled-medical", "validation")) == [
        t.strip() for t in bundled.medical_validation if t.strip()
    ]
    mcq_val = first_epoch(open_source("bundled-mcq", "validation"))
    assert mcq_val == [AnswerFormat.LETTER.pretrain_text(m) for m in bundled.mcq["validation"]]


@pytest.mark.fast
def test_unknown_name_and_missing_path_messages(tmp_path):
    with pytest.raises(DataError, match=r"unknown dataset 'foo'; known: fineweb-edu, medqa, .*or a local path"):
        open_source("foo")
    with pytest.raises(DataError, match="no such file or folder: '.*nope.jsonl'"):
        open_source(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="matches no files"):
        open_source(str(tmp_path / "*.parquet"))
    with pytest.raises(DataError, match="unknown split"):
        open_source("bundled-general", "dev")  # type: ignore[arg-type]


@pytest.mark.fast
def test_malformed_record_names_the_source(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "fine"}, {"body": "no text field"}])
    with pytest.raises(DataError, match=r"bad.jsonl record 2 .*'text'"):
        first_epoch(open_source(str(path)))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "ok"}\n{"text": oops\n')
    with pytest.raises(DataError, match="could not parse .*broken.jsonl"):
        first_epoch(open_source(str(broken)))
    write_jsonl(tmp_path / "mixed" / "a.jsonl", [{"text": "one"}])
    write_jsonl(tmp_path / "mixed" / "b.jsonl", [{"text": "two", "id": 2}])
    with pytest.raises(DataError, match="could not parse .*mixed.*CastError"):
        first_epoch(open_source(str(tmp_path / "mixed")))


@pytest.mark.fast
@pytest.mark.parametrize("count", [1, 2, 3])
def test_shards_are_disjoint_and_complete(text_dir, count):
    # Two files: two shards split by file, three by example (both datasets paths).
    hub_like = [first_epoch(open_source(str(text_dir), shard=Shard(i, count))) for i in range(count)]
    in_memory = [first_epoch(open_source("bundled-general", shard=Shard(i, count))) for i in range(count)]
    bundled_all = first_epoch(open_source("bundled-general"))
    for shards, everything in ((hub_like, expected_train(DOCS)), (in_memory, bundled_all)):
        merged = [doc for shard in shards for doc in shard]
        assert len(merged) == len(set(merged)) == len(everything)
        assert set(merged) == set(everything)


@pytest.mark.parametrize("name", ["hf", "list"])
def test_resume_mid_stream_matches_uninterrupted(text_dir, name):
    path = "bundled-general" if name == "list" else str(text_dir / "b.jsonl")
    reference = [(d.text, d.epoch) for d in islice(open_source(path), 400)]  # crosses epochs

    first = open_source(path)
    head = [(d.text, d.epoch) for d in islice(first, 150)]
    state = json.loads(json.dumps(first.state_dict()))  # must survive meta.json
    resumed = open_source(path)
    resumed.load_state_dict(state)
    tail = [(d.text, d.epoch) for d in islice(resumed, 250)]
    assert head + tail == reference
    assert resumed.docs_read == 400


def flaky_dataset(failures: dict[str, int], at: int = 7, n: int = 20) -> IterableDataset:
    """A real streaming dataset whose reader drops the connection at record ``at``."""

    def gen():
        for i in range(n):
            if i == at and failures["left"] > 0:
                failures["left"] -= 1
                raise ConnectionError("connection reset by peer")
            yield {"text": f"doc {i}"}

    return IterableDataset.from_generator(gen)


@pytest.mark.fast
def test_transient_errors_are_retried_with_backoff_and_no_document_is_repeated():
    failures = {"left": 3}
    sleeps: list[float] = []
    source = HFSource(
        "flaky",
        lambda: flaky_dataset(failures),
        _text_field("text", None),
        retry=RetryPolicy(tries=5, base_delay_s=0.01),
        sleep=sleeps.append,
    )
    assert first_epoch(source) == [f"doc {i}" for i in range(20)]
    assert sleeps == [0.01, 0.02, 0.04]


@pytest.mark.fast
def test_persistent_errors_give_up_with_a_data_error():
    sleeps: list[float] = []
    source = HFSource(
        "down",
        lambda: flaky_dataset({"left": 10**9}),
        _text_field("text", None),
        retry=RetryPolicy(tries=5, base_delay_s=0.01),
        sleep=sleeps.append,
    )
    with pytest.raises(DataError, match="reading 'down' failed 5 times in a row; last error: ConnectionError"):
        first_epoch(source)
    assert sleeps == [0.01, 0.02, 0.04, 0.08]


@pytest.mark.fast
def test_empty_shard_raises_instead_of_looping_forever(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "one.jsonl", [{"text": "only document"}])
    with pytest.raises(DataError, match="has no documents"):
        next(iter(open_source(str(path), shard=Shard(1, 2))))


@pytest.mark.parametrize("where", ["bundled", "local"])
def test_repeated_mcq_epochs_reorder_options_reproducibly(bundled_dir, where):
    path = "bundled-mcq" if where == "bundled" else str(bundled_dir / "medqa_train.jsonl")
    first = open_source(path)
    n = sum(1 for _ in first_epoch(open_source(path)))
    docs = list(islice(first, 2 * n))
    epoch0, epoch1 = [d.text for d in docs[:n]], [d.text for d in docs[n:]]
    assert {d.epoch for d in docs[:n]} == {0} and {d.epoch for d in docs[n:]} == {1}
    assert epoch0 == first_epoch(open_source(path))  # epoch 0 is the data as given

    def parts(text: str) -> tuple[str, set[str], str]:
        question, rest = text.split("\n\nA. ", 1)
        options, answer = rest.split("\n\nAnswer: ", 1)
        shown = dict(line.split(". ", 1) for line in ("A. " + options).splitlines())
        letter, gold = answer.split("\n")[0].split(". ", 1)
        assert shown[letter] == gold  # the answer letter moved with its text
        return question, set(shown.values()), gold

    changed = 0
    for a, b in zip(epoch0, epoch1):
        qa, oa, gold_a = parts(a)
        qb, ob, gold_b = parts(b)
        assert (qa, oa, gold_a) == (qb, ob, gold_b)  # same question, options and gold text
        changed += a != b
    assert changed > 0.6 * n  # 23 of 24 permutations move something
    # Reproducible: a new source renders epoch 1 the same way.
    assert [d.text for d in islice(open_source(path), 2 * n)][n:] == epoch1


@pytest.mark.fast
def test_mcq_sources_write_the_run_answer_format(bundled, bundled_dir):
    explain = AnswerFormat.EXPLAIN
    mcq_val = first_epoch(open_source("bundled-mcq", "validation", answer_format=explain))
    assert mcq_val == [explain.pretrain_text(m) for m in bundled.mcq["validation"]]
    assert all(t.endswith(f"\nAnswer: {m.answer_text}") for t, m in zip(mcq_val, bundled.mcq["validation"]))
    # GBaker's MedQA schema has no explanation: explain writes those records in the text form.
    local = first_epoch(open_source(str(bundled_dir / "medqa_train.jsonl"), "validation", answer_format=explain))
    records = [normalize_mcq(json.loads(line)) for line in (bundled_dir / "medqa_validation.jsonl").open()]
    assert local == [AnswerFormat.TEXT.pretrain_text(m) for m in records]
    assert "Explanation:" not in "".join(local)


@pytest.mark.fast
def test_preview_counts_records_without_explanation(bundled_dir, tiny_tokenizer, tmp_path):
    from pure_transformer.data.preview import preview

    tiny_tokenizer.save(tmp_path / "tok")
    lines: list[str] = []
    table = preview(str(tmp_path / "tok"), f"bundled-mcq:0.5,{bundled_dir / 'medqa_train.jsonl'}:0.5", seq_len=64,
                    num_blocks=20, show=0, answer_format=AnswerFormat.EXPLAIN, print_fn=lines.append)
    local = str(bundled_dir / "medqa_train.jsonl")
    assert table["bundled-mcq"]["no_explanation"] == 0
    assert table[local]["no_explanation"] == len(list((bundled_dir / "medqa_train.jsonl").open())) > 0
    assert any("written in the text form" in line for line in lines)


@pytest.mark.fast
def test_checkpoints_say_their_format():
    assert AnswerFormat.of_checkpoint({"config": {"answer_format": "explain"}}) is AnswerFormat.EXPLAIN
    assert AnswerFormat.of_checkpoint({"answer_format": "text", "config": {}}) is AnswerFormat.TEXT
    assert AnswerFormat.of_checkpoint({"config": {"lr": 1.0}}) is AnswerFormat.LETTER  # older than formats


# ------------------------------------------------------------ local files named by split
def _medqa_rows(bundled, split: str, n: int) -> list[dict]:
    return [{"question": q.question, "options": q.options, "answer_idx": q.answer, "answer": q.answer_text}
            for q in bundled.mcq[split][:n]]


def test_one_file_without_a_split_name_is_split_by_hash_for_training(tmp_path, write_jsonl, bundled, capsys):
    """Training reads a no-split question file by question hash (75% train, 5% validation), so 20% of it
    is never trained on; its test split is the whole file (evaluate leaves out what the ledger holds)."""
    from pure_transformer.data.registry import load_mcqs, open_source
    from pure_transformer.data.sources import HASH_SPLIT_PERCENT, HashSplit

    rows = _medqa_rows(bundled, "test", 400)
    path = write_jsonl(tmp_path / "medqa.jsonl", rows)
    splits = {split: [q.question for q in load_mcqs(str(path), split)] for split in ("train", "validation", "test")}
    assert sorted(splits["test"]) == sorted(r["question"] for r in rows)  # the whole file
    unseen = [r["question"] for r in rows if HashSplit("test").admits(r["question"])]
    assert sorted(splits["train"] + splits["validation"] + unseen) == sorted(r["question"] for r in rows)
    assert 50 <= len(unseen) <= 110 and len(splits["validation"]) <= 40
    assert len(HASH_SPLIT_PERCENT["test"]) == 20
    # pretraining on the file reads its train part only: the held-out fifth never becomes training text
    from pure_transformer.data.sources import first_pass

    seen = [doc.text for doc in first_pass(open_source(str(path), "train"))]
    assert len(seen) == len(splits["train"])
    assert not any(q in text for q in unseen + splits["validation"] for text in seen)
    assert "training splits its questions by hash (75% train, 5% validation, 20% never trained on)" in \
        capsys.readouterr().err


@pytest.mark.fast
def test_a_file_named_for_its_split_is_that_split(tmp_path, write_jsonl, bundled):
    from pure_transformer.data.registry import load_mcqs

    path = write_jsonl(tmp_path / "phrases_no_exclude_test.jsonl", _medqa_rows(bundled, "test", 5))
    assert len(load_mcqs(str(path), "test")) == 5
    with pytest.raises(DataError, match="is a test file: it has no train split"):
        load_mcqs(str(path), "train")


@pytest.mark.fast
def test_a_folder_of_hub_files_gives_each_split_its_file(tmp_path, write_jsonl, bundled):
    # GBaker/MedQA's own file names; the dev file is validation, and training never sees a test question.
    from pure_transformer.data.registry import load_mcqs

    folder = tmp_path / "medqa"
    write_jsonl(folder / "phrases_no_exclude_train.jsonl",
                _medqa_rows(bundled, "train", 30) + _medqa_rows(bundled, "test", 2))  # 2 leaked test questions
    write_jsonl(folder / "phrases_no_exclude_dev.jsonl", _medqa_rows(bundled, "validation", 7))
    write_jsonl(folder / "phrases_no_exclude_test.jsonl", _medqa_rows(bundled, "test", 9))
    split = {s: [q.question for q in load_mcqs(str(folder), s)] for s in ("train", "validation", "test")}
    assert (len(split["train"]), len(split["validation"]), len(split["test"])) == (30, 7, 9)
    assert not set(split["train"]) & set(split["test"])


# ------------------------------------------------------------ which errors are retried
class _HTTPError(OSError):
    def __init__(self, status: int):
        super().__init__(f"{status} Client Error")
        self.response = type("Response", (), {"status_code": status})()


def _chained(outer: BaseException, inner: BaseException) -> BaseException:
    outer.__cause__ = inner
    return outer


@pytest.mark.parametrize("err, transient", [
    (ConnectionResetError("connection reset by peer"), True),
    (TimeoutError("read timed out"), True),
    (_HTTPError(503), True), (_HTTPError(429), True), (_HTTPError(500), True),
    (_HTTPError(404), False), (_HTTPError(401), False), (_HTTPError(403), False),
    (_chained(ConnectionError("Connection aborted"), ConnectionResetError()), True),
    (ConnectionError("Couldn't reach 'GBaker/MedQA' on the Hub (offline mode is enabled)"), False),
    (FileNotFoundError("no such file"), False),
    (_chained(ConnectionError("Max retries exceeded"), __import__("socket").gaierror(-2, "Name or service not known")),
     False),
    (OSError("something else"), False),
])
@pytest.mark.fast
def test_only_transient_errors_are_retried(err, transient):
    from pure_transformer.data.sources import is_transient

    assert is_transient(err) is transient


@pytest.mark.fast
def test_permanent_error_fails_at_once_and_retries_say_so(capsys):
    sleeps: list[float] = []

    def missing():
        raise FileNotFoundError("dataset 'nobody/nothing' does not exist")

    source = HFSource("gone", missing, _text_field("text", None), retry=RetryPolicy(tries=5, base_delay_s=0.01),
                      sleep=sleeps.append)
    with pytest.raises(DataError, match="cannot read 'gone': FileNotFoundError: dataset 'nobody/nothing'"):
        first_epoch(source)
    assert sleeps == []
    source = HFSource("flaky", lambda: flaky_dataset({"left": 2}), _text_field("text", None),
                      retry=RetryPolicy(tries=5, base_delay_s=0.5), sleep=sleeps.append)
    assert len(first_epoch(source)) == 20
    assert capsys.readouterr().err.splitlines() == [
        "warning: reading 'flaky': ConnectionError: connection reset by peer; retrying (1/4) in 0.5 s",
        "warning: reading 'flaky': ConnectionError: connection reset by peer; retrying (2/4) in 1 s"]


@pytest.mark.parametrize("argv, names", [
    (["data", "overlap", "--train", "bundled-mcq", "--eval", "medqa"], "'medqa'"),
    (["data", "preview", "--tokenizer", "TOK", "--mixture", "fineweb-edu:1"], "'fineweb-edu'"),
])
def test_hub_names_offline_fail_fast_in_one_line(tmp_path, tiny_tokenizer, argv, names):
    # The real hub call path with the hub unreachable by configuration: one error line, exit 2, no retries.
    import os
    import subprocess
    import sys
    import time

    tiny_tokenizer.save(tmp_path / "tok")
    argv = [str(tmp_path / "tok") if a == "TOK" else a for a in argv]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    code = "from pure_transformer.cli import main; import sys; sys.exit(main(sys.argv[1:]))"
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: cannot read {names}") and proc.stderr.count("\n") == 1, proc.stderr
    assert "retrying" not in proc.stderr
    assert time.monotonic() - start < 60
