"""``evaluate`` on files built like the real ones: every question it can score is scored, the rest are
counted by cause; ``--limit`` samples a sorted file fairly; every mode counts its cut prompts; and the
majority-answer baseline stands beside every accuracy."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from pure_transformer.bundled.synthetic import bundled_corpus
from pure_transformer.eval.run import sample_questions
from pure_transformer.evaluate import main as evaluate_main
from pure_transformer.mcq.record import MCQ, rotate_options
from pure_transformer.model.config import ModelConfig

CFG = ModelConfig(vocab_size=512, dim=32, n_layers=1, n_heads=2, ffn_dim=64, max_seq_len=256)  # the tiny context


def relettered(q: MCQ, letter: str) -> MCQ:
    """``q`` with its gold option moved to ``letter``."""
    return rotate_options(q, (q.letters.index(letter) - q.letters.index(q.answer)) % len(q.options))


def record(q: MCQ) -> dict:
    return {"question": q.question, "options": q.options, "answer_idx": q.answer}


def write(path: Path, questions: list[MCQ]) -> Path:
    path.write_text("".join(json.dumps(record(q)) + "\n" for q in questions))
    return path


@pytest.fixture(scope="module")
def realistic_file(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> Path:
    """15 questions with the features that stopped whole runs: 10 vignettes of 300-1,500 tokens, 2 whose
    options are symbols only, 1 with two identical options, 2 whose options alone overflow the context."""
    # questions with short options: the long stems below, not the options, decide what fits
    bank = [q for q in bundled_corpus().mcq["test"] if max(map(len, q.options.values())) < 40]
    filler = " ".join(q.question for q in bank[:200])
    questions = []
    for i, tokens in enumerate(range(300, 1501, 133)):  # 10 lengths
        q = bank[i]
        words = filler.split()
        stem = " ".join(words[:tokens // 2])
        while len(tiny_tokenizer.encode(stem)) < tokens:
            words = words[tokens // 4:] + words[:tokens // 4]
            stem += " " + " ".join(words[:tokens // 8])
        questions.append(MCQ(question=f"{stem} {q.question}", options=q.options, answer=q.answer))
    symbols = {"A": "↑", "B": "↓", "C": "↑↑", "D": "normal"}  # MedQA's arrow options: no words to name them by
    questions += [MCQ(question=bank[20].question, options=symbols, answer="B"),
                  MCQ(question=bank[21].question, options={**symbols, "D": "↓↓"}, answer="A")]
    same = dict(bank[22].options, D=bank[22].options["C"])
    questions.append(MCQ(question=bank[22].question, options=same, answer="A"))
    long_option = " ".join(filler.split()[:40])
    for j in (23, 24):  # four options of ~40 words: no room for the 96-token explanation in 256 tokens
        questions.append(MCQ(question=bank[j].question, answer="A",
                             options={k: f"{k} {long_option}" for k in "ABCD"}))
    return write(tmp_path_factory.mktemp("real") / "medqa_like_test.jsonl", questions)


@pytest.mark.fast
def test_generate_scores_a_whole_realistic_file_and_counts_what_it_skips(
        realistic_file: Path, random_checkpoint, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = random_checkpoint(tmp_path, CFG)  # answer format explain, 96-token answers, a 256-token context
    report = tmp_path / "report.json"
    code = evaluate_main(["--checkpoint", str(ckpt), "--data-path", str(realistic_file), "--mode", "generate",
                          "--output", str(report), "--no-progress"])
    out = capsys.readouterr()
    assert code == 0, out.err
    (r,) = json.loads(report.read_text())
    assert r["mode"] == "generate/explain" and r["n"] == 10
    assert r["skipped"] == {"no_room": 2, "unanswerable": 3}
    assert len(r["skipped_questions"]) == 5 and {q["cause"] for q in r["skipped_questions"]} == set(r["skipped"])
    assert not {q["id"] for q in r["skipped_questions"]} & {q["id"] for q in r["questions"]}
    assert r["truncated"] == 10  # every vignette is longer than the context: cut, still scored
    skipped_lines = [line for line in out.err.splitlines() if "skipped" in line]
    assert len(skipped_lines) == 1 and skipped_lines[0].startswith("warning: generate/explain: skipped 5 of 15 ")
    assert "2 leave no room for the 96-token answer" in skipped_lines[0]
    assert f"{'generate/explain':<18}{10:>5}{5:>8}{0:>8}" in out.out
    # --strict stops at the first question it cannot ask, in one line.
    assert evaluate_main(["--checkpoint", str(ckpt), "--data-path", str(realistic_file), "--mode", "generate",
                          "--strict", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 3 of the 15 ") and "cannot be answered in the explain format" in err
    assert err.count("\n") == 1
    # Options that leave no room stop it too, with the numbers.
    overflowing = tmp_path / "overflow_test.jsonl"
    overflowing.write_text("".join(line + "\n" for line in realistic_file.read_text().splitlines()[-2:]))
    assert evaluate_main(["--checkpoint", str(ckpt), "--data-path", str(overflowing), "--mode", "generate",
                          "--strict", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: question ") and "does not fit" in err and "the answer 96" in err
    assert err.count("\n") == 1


@pytest.mark.fast
def test_loglikelihood_and_cloze_count_their_cut_prompts(realistic_file: Path, random_checkpoint, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    ckpt = random_checkpoint(tmp_path, CFG)
    report = tmp_path / "report.json"
    assert evaluate_main(["--checkpoint", str(ckpt), "--data-path", str(realistic_file), "--mode",
                          "loglikelihood,cloze", "--output", str(report), "--no-progress"]) == 0
    for r in json.loads(report.read_text()):
        assert r["n"] == 15 and r["skipped"] == {}  # these modes keep the end of any prompt, as lm-eval does
        assert r["truncated"] >= 10, r["mode"]
    warnings = capsys.readouterr().err
    assert "warning: loglikelihood: " in warnings and "warning: cloze: " in warnings


@pytest.mark.fast
def test_limit_samples_a_sorted_file_by_its_answers(tmp_path: Path, tiny_tokenizer, random_checkpoint,
                                                    capsys: pytest.CaptureFixture) -> None:
    """A file sorted by label (70 A, then 20 B, 10 C): ``--first 20`` is all A, and a model that always
    answers A would score 1.000 on it; ``--limit 20`` keeps the file's shares (14, 4, 2). The majority
    baseline says what always answering the commonest letter scores."""
    bank = bundled_corpus().mcq["test"]
    questions = [relettered(q, letter) for q, letter in zip(bank, "A" * 70 + "B" * 20 + "C" * 10)]
    path = write(tmp_path / "sorted_test.jsonl", questions)
    ckpt = random_checkpoint(tmp_path, CFG)
    golds = {}
    for flag in ("--first", "--limit"):
        out_json = tmp_path / f"{flag}.json"
        assert evaluate_main(["--checkpoint", str(ckpt), "--data-path", str(path), "--mode", "loglikelihood",
                              flag, "20", "--output", str(out_json), "--no-progress"]) == 0
        (r,) = json.loads(out_json.read_text())
        golds[flag] = Counter(q["gold"] for q in r["questions"])
        assert r["n"] == 20
    out = capsys.readouterr().out
    assert golds["--first"] == {"A": 20}
    assert golds["--limit"] == {"A": 14, "B": 4, "C": 2}
    assert "20 of 100 questions, random, stratified by answer (seed 0)" in out
    assert "the first 20 of 100 questions" in out and "majority 1.000" in out and "majority 0.700" in out
    assert evaluate_main(["--checkpoint", str(ckpt), "--data-path", str(path), "--limit", "5", "--first", "5"]) == 2
    assert evaluate_main(["--checkpoint", str(ckpt), "--data-path", str(path), "--limit", "-3"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: give --limit (a random sample) or --first (the first N), not both",
                   "error: --limit must be a positive number of questions, got -3"]


@pytest.mark.fast
def test_sample_questions_is_seeded_stratified_and_in_file_order() -> None:
    bank = bundled_corpus().mcq["test"][:97]
    questions = [relettered(q, "ABCD"[i % 3 if i < 60 else 3]) for i, q in enumerate(bank)]  # skewed shares
    first, how = sample_questions(questions, 30, seed=1)
    again, _ = sample_questions(questions, 30, seed=1)
    other, _ = sample_questions(questions, 30, seed=2)
    assert first == again and first != other and len(first) == 30
    assert [questions.index(q) for q in first] == sorted(questions.index(q) for q in first)
    file_shares = Counter(q.answer for q in questions)
    for letter, count in Counter(q.answer for q in first).items():
        assert abs(count - 30 * file_shares[letter] / 97) < 1  # largest remainder: within one of the exact share
    assert sample_questions(questions, 500) == (questions, "all 97 questions")
    assert how == "30 of 97 questions, random, stratified by answer (seed 1)"
