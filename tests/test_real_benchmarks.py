"""Real benchmark files: every hub schema on small local fixtures, any option count, long prompts,
and the answer-line parser against the option lists real questions have (doses, percentages,
nested names)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from pure_transformer.data.registry import load_mcqs
from pure_transformer.errors import DataError
from pure_transformer.eval.scoring import (fit_prompt, greedy_mcq_accuracy, letter_scores, majority_vote,
                                           passk_mcq_accuracy)
from pure_transformer.inference.engine import Engine
from pure_transformer.mcq.answer_format import (NO_ANSWER_CAUSES, AnswerFormat, check_answerable, extract_letter,
                                                named_option, normalize, require_answerable)
from pure_transformer.mcq.record import MCQ
from pure_transformer.mcq.schemas import normalize_mcq
from pure_transformer.model.config import ModelConfig
from pure_transformer.model.transformer import build_model
from pure_transformer.serving.worker import answer_request, letter_answer, read_answer

CFG = ModelConfig(vocab_size=512, dim=32, n_layers=1, n_heads=2, ffn_dim=64, max_seq_len=256)  # the tiny context


@pytest.fixture(scope="module")
def tiny_model_and_tok(tiny_tokenizer):
    torch.manual_seed(0)
    return build_model(CFG).eval(), tiny_tokenizer


ABSTRACT = "Statins lower LDL cholesterol. In a cohort of 400 adults, events fell by a quarter."


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------ schemas
@pytest.mark.fast
def test_every_hub_schema_reads_into_one_record(tmp_path: Path) -> None:
    pubmed = {"pubid": 1, "question": "Do statins help?", "context": {"contexts": [ABSTRACT, "Second part."],
              "labels": ["A", "B"], "meshes": []}, "long_answer": "Yes, they do.", "final_decision": "maybe"}
    mcq = normalize_mcq(pubmed)
    assert mcq.options == {"A": "yes", "B": "no", "C": "maybe"} and mcq.answer == "C"
    assert mcq.context == ABSTRACT + "\nSecond part." and mcq.chance == pytest.approx(1 / 3)
    bigbio = {"QUESTION": "Do statins help?", "CONTEXTS": [ABSTRACT], "final_decision": "no"}
    assert normalize_mcq(bigbio).answer == "B" and normalize_mcq(bigbio).context == ABSTRACT
    medqa_hf = {"id": "train-0", "sent1": "Which drug?", "sent2": "", "ending0": "Warfarin", "ending1": "Heparin",
                "ending2": "Aspirin", "ending3": "Insulin", "label": 2}
    assert normalize_mcq(medqa_hf) == MCQ("Which drug?", {"A": "Warfarin", "B": "Heparin", "C": "Aspirin",
                                                         "D": "Insulin"}, "C")
    with pytest.raises(DataError, match=r"MedQA -hf label must be an integer 0-3, got 4 \(x record 1\)"):
        normalize_mcq({**medqa_hf, "label": 4}, where="x record 1")

    mmlu = {"question": "Which bone?", "subject": "anatomy", "choices": ["Femur", "Tibia", "Ulna", "Radius"],
            "answer": 2}
    assert normalize_mcq(mmlu).answer_text == "Ulna" and normalize_mcq(mmlu).subject == "anatomy"
    five = {"question": "Q?", "options": [{"key": k, "value": f"v{k}"} for k in "ABCDE"], "answer_idx": "E"}
    assert normalize_mcq(five).answer_text == "vE"
    bullets = {"question": "Q?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "ope": "e", "answer_idx": "D",
               "explanation": "Because d."}
    assert normalize_mcq(bullets).letters == tuple("ABCDE") and normalize_mcq(bullets).explanation == "Because d."

    with pytest.raises(DataError) as err:
        normalize_mcq({"prompt": "Q?", "label": 1}, where="x.jsonl record 0")
    message = str(err.value)
    assert "\n" not in message and "unrecognised MCQ record (fields: prompt, label) (x.jsonl record 0)" in message
    for name in ("MedQA", "MedQA -hf", "MedMCQA", "PubMedQA", "MMLU (cais/mmlu)", "MMLU CSV", "normalised"):
        assert name in message
    with pytest.raises(DataError, match="PubMedQA final_decision must be yes, no or maybe"):
        normalize_mcq({**pubmed, "final_decision": "perhaps"})
    with pytest.raises(DataError, match="MMLU answer must be an integer 0-3"):
        normalize_mcq({**mmlu, "answer": 4})


@pytest.mark.fast
def test_local_files_in_each_format_load(tmp_path: Path) -> None:
    # MMLU's original release: a headerless CSV per subject.
    rows = [["Which bone, with a comma?", "Femur", "Tibia", "Ulna", "Radius", "C"],
            ["Which muscle?", "Deltoid", "Biceps", "Triceps", "Soleus", "A"]]
    with (tmp_path / "anatomy_test.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    questions = load_mcqs(str(tmp_path / "anatomy_test.csv"), "test")
    assert [q.answer_text for q in questions] == ["Ulna", "Deltoid"]
    assert questions[0].question == "Which bone, with a comma?"

    # One file mixing 4- and 5-option rows (datasets fills the missing "E" with None).
    mixed = _jsonl(tmp_path / "mixed_test.jsonl", [
        {"question": "Four?", "options": {k: f"four {k}" for k in "ABCD"}, "answer_idx": "D"},
        {"question": "Five?", "options": {k: f"five {k}" for k in "ABCDE"}, "answer_idx": "E"}])
    loaded = load_mcqs(str(mixed), "test")
    assert [len(q.options) for q in loaded] == [4, 5] and loaded[1].answer_text == "five E"

    pubmed = _jsonl(tmp_path / "pubmedqa_test.jsonl", [
        {"question": f"Does drug {i} work?", "context": {"contexts": [ABSTRACT]}, "final_decision": "yes"}
        for i in range(3)])
    assert {q.context for q in load_mcqs(str(pubmed), "test")} == {ABSTRACT}


# ------------------------------------------------------------------ rendering
@pytest.mark.fast
def test_prompts_follow_the_option_count_and_show_the_context() -> None:
    mcq = MCQ("Do statins help?", {"A": "yes", "B": "no", "C": "maybe"}, "A", context=ABSTRACT)
    prompt = AnswerFormat.LETTER.prompt(mcq)
    assert prompt == f"Context: {ABSTRACT}\n\nQuestion: Do statins help?\n\nA. yes\nB. no\nC. maybe\n\nAnswer:"
    assert "".join(AnswerFormat.EXPLAIN.prompt_parts(mcq)) == AnswerFormat.EXPLAIN.prompt(mcq)
    for fmt in AnswerFormat:
        assert fmt.parse(mcq, fmt.target(mcq) if fmt is not AnswerFormat.EXPLAIN else " x\nAnswer: yes") == "A"


@pytest.mark.fast
def test_letter_scores_have_one_entry_per_option(tiny_model_and_tok) -> None:
    model, tok = tiny_model_and_tok
    questions = [MCQ("Q?", {"A": "yes", "B": "no"}, "A"), MCQ("Q?", {k: k.lower() for k in "ABCDE"}, "E")]
    assert [s.shape[0] for s in letter_scores(model, tok, questions)] == [2, 5]


# ------------------------------------------------------------------ the parser on real options
DOSES = {"A": "5 mg", "B": "0.5 mg", "C": "<5%", "D": ">5%", "E": "Tremor", "F": "Resting tremor"}


@pytest.mark.parametrize("line, expected", [
    ("5 mg", "A"), ("5mg", "A"), ("A. 5 mg", "A"), ("**5 mg**", "A"), ("0.5 mg", "B"), ("<5%", "C"), (">5%", "D"),
    # numbers are whole: a dose off by 10x, another decimal, a sign or a range is not "5 mg"
    ("2.5 mg", None), ("1.5 mg", None), ("-5 mg", None), ("50 mg", None), ("2-5 mg", None), ("5.0 mg", None),
    ("0.1%", None), ("5 mg/kg", None), ("15 mg", None),
    # nested and negated names: the line must be one option, nothing more
    ("tremor (not resting tremor)", None), ("resting tremor and tremor", None), ("not tremor", None),
    ("no tremor", None), ("Tremor", "E"), ("resting tremor", "F"), ("F. Tremor", None), ("E. Tremor", "E"),
    ("5 mg or 0.5 mg", None), ("", None),
])
@pytest.mark.fast
def test_answer_line_on_numeric_and_nested_options(line: str, expected: str | None) -> None:
    assert named_option(MCQ("q?", DOSES, "A"), line) == expected


@pytest.mark.fast
def test_numbers_normalise_whole() -> None:
    assert normalize("0.5 mg, -5 mg; 2-5 mg at <5% or > 5%; 1,000 U; COVID-19; beta-blocker") == \
        "0.5 mg -5 mg 2-5 mg at <5% or >5% 1,000 u covid 19 beta blocker"
    assert normalize("0.1%") != normalize("1%") and normalize("2.1%") != normalize("1%")


@pytest.mark.fast
@pytest.mark.parametrize("completion", [" A B", " A, or B", " A. or B", " A (or B)", "A or B", "A/B", " A B. x"])
def test_two_letters_are_no_answer(completion: str) -> None:
    assert extract_letter(completion, tuple("ABCD")) is None


@pytest.mark.fast
def test_letters_beyond_the_question_are_refused_and_a_capital_article_is_kept() -> None:
    assert extract_letter(" E", tuple("ABCD")) is None and extract_letter(" E", tuple("ABCDE")) == "E"
    assert extract_letter(" C. A beta blocker", tuple("ABCD")) == "C"


NAMES = {"A": "α-blocker", "B": "β-blocker", "C": "blocker", "D": "Ca++ channel", "E": "Ca channel",
         "F": "α-1 antitrypsin"}


@pytest.mark.parametrize("line, expected", [
    ("α-blocker", "A"), ("Α-BLOCKER", "A"), ("β blocker", "B"), ("blocker", "C"), ("ca++ channel", "D"),
    ("Ca channel", "E"), ("α-1 antitrypsin", "F"), ("1 antitrypsin", None), ("alpha-blocker", None),
    ("β-blocker or α-blocker", None), ("Ca+ channel", None),
])
@pytest.mark.fast
def test_answer_line_keeps_greek_letters_and_charges(line: str, expected: str | None) -> None:
    assert named_option(MCQ("q?", NAMES, "A"), line) == expected


@pytest.mark.fast
def test_unnameable_options_are_reported() -> None:
    assert check_answerable(MCQ("q?", DOSES, "A")) is None and check_answerable(MCQ("q?", NAMES, "A")) is None
    assert "no words or numbers" in check_answerable(MCQ("q?", {"A": "—", "B": "x"}, "A"))
    assert "read the same" in check_answerable(MCQ("q?", {"A": "Warfarin.", "B": "warfarin"}, "A"))


@pytest.mark.fast
def test_unanswerable_questions_are_refused_in_one_line_by_the_text_formats() -> None:
    good, dash = MCQ("q?", DOSES, "A"), MCQ("Which sign?", {"A": "—", "B": "x"}, "A")
    require_answerable([good, dash], AnswerFormat.LETTER, "test")  # letters name any option
    for fmt in (AnswerFormat.TEXT, AnswerFormat.EXPLAIN):
        with pytest.raises(DataError) as err:
            require_answerable([good, dash, dash], fmt, "x.jsonl test")
        message = str(err.value)
        assert message.startswith(f"2 of the 3 x.jsonl test questions cannot be answered in the {fmt.value} format "
                                  "(question 1, 'Which sign?'") and "\n" not in message


@pytest.mark.fast
def test_constant_policies_on_numeric_questions_earn_nothing_extra() -> None:
    """Real-style dose questions: gold is one dose, distractors its neighbours. A policy that always
    writes a near-miss dose (the gold number with a decimal, a sign or a factor of ten) earns 0."""
    questions = []
    for i, dose in enumerate([5, 10, 25, 50, 100, 250]):
        options = {"A": f"{dose} mg", "B": f"{dose / 10:g} mg", "C": f"{dose * 10} mg", "D": f"{dose + 0.5:g} mg"}
        questions.append(MCQ(f"Dose {i}?", options, "A"))
    near_misses = [lambda d: f"0.{d} mg", lambda d: f"-{d} mg", lambda d: f"{d}.5 mg", lambda d: f"{d}0 mg",
                   lambda d: f"{d} mg or more", lambda d: f"not {d} mg"]
    for policy in near_misses:
        for fmt in (AnswerFormat.TEXT, AnswerFormat.EXPLAIN):
            prefix = " The dose is standard.\nAnswer:" if fmt is AnswerFormat.EXPLAIN else ""
            rewards = [fmt.parse(q, f"{prefix} {policy(q.options['A'].split()[0])}") == q.answer for q in questions]
            assert sum(rewards) == 0, (fmt, policy(5))


@pytest.mark.fast
def test_majority_vote_ties_are_no_answer() -> None:
    assert majority_vote(["A", "B"]) is None and majority_vote(["B", "B", "A"]) == "B"
    assert majority_vote([None, None, "C"]) == "C" and majority_vote([None]) is None


# ------------------------------------------------------------------ long prompts
def _vignette(words: int) -> str:
    parts = ["A 54-year-old man comes to the emergency department because of chest pain for two hours."]
    filler = ("His blood pressure is 150/90 mm Hg and pulse is 104/min. He has smoked one pack daily for 30 years. "
              "Examination shows diaphoresis and an S4 gallop. ")
    while len(" ".join(parts).split()) < words:
        parts.append(filler)
    return " ".join(parts) + " Which of the following is the most appropriate next step in management?"


LONG_OPTIONS = {"A": "Aspirin", "B": "Heparin", "C": "Coronary angiography", "D": "Exercise stress test",
                "E": "Reassurance"}


@pytest.mark.fast
@pytest.mark.parametrize("fmt", list(AnswerFormat))
def test_fit_prompt_cuts_the_stem_start_only(tiny_model_and_tok, fmt: AnswerFormat) -> None:
    _, tok = tiny_model_and_tok
    mcq = MCQ(_vignette(600), dict(LONG_OPTIONS), "C", context=None)
    ids, cut = fit_prompt(tok, mcq, fmt, context=256, reserve=96)
    assert cut and len(ids) <= 256 - 96
    text = tok.decode(ids[1:])
    head, body, tail = fmt.prompt_parts(mcq)
    assert text.startswith("Question: ") and text.endswith(tail)  # options and cue whole
    assert "Which of the following is the most appropriate next step" in text  # the stem's end survives
    short = MCQ("Which drug?", dict(LONG_OPTIONS), "A")
    assert fit_prompt(tok, short, fmt, context=256, reserve=96) == ([tok.eot_id] + tok.encode(fmt.prompt(short)),
                                                                    False)


@pytest.mark.fast
def test_fit_prompt_keeps_the_end_of_a_long_context(tiny_model_and_tok) -> None:
    _, tok = tiny_model_and_tok
    mcq = MCQ("Do statins help?", {"A": "yes", "B": "no", "C": "maybe"}, "A",
              context=_vignette(500) + " The end of the abstract.")
    ids, cut = fit_prompt(tok, mcq, AnswerFormat.LETTER, context=256, reserve=24)
    text = tok.decode(ids[1:])
    assert cut and text.startswith("Context: ") and "The end of the abstract.\n\nQuestion: Do statins help?" in text


@pytest.mark.fast
def test_options_that_cannot_fit_are_one_error_naming_the_numbers(tiny_model_and_tok) -> None:
    _, tok = tiny_model_and_tok
    huge = {k: _vignette(60) for k in "ABCD"}
    with pytest.raises(DataError, match=r"does not fit: its options and cue take \d+ tokens, the answer 96, and the "
                                        r"model's context is 256 tokens"):
        fit_prompt(tok, MCQ("Q?", huge, "A"), AnswerFormat.EXPLAIN, context=256, reserve=96)


@pytest.mark.fast
def test_real_length_vignettes_in_every_mode_and_format(tiny_model_and_tok) -> None:
    """300-1,500-token vignettes through generate, passk and /v1/mcq's answers on a 256-token model:
    every prompt is cut, counted, and answered; nothing raises."""
    model, tok = tiny_model_and_tok
    engine = Engine(model, tok)
    questions = [MCQ(_vignette(words), dict(LONG_OPTIONS), "C") for words in (250, 700, 1200)]
    assert all(len(tok.encode(q.question)) >= 300 for q in questions)
    for fmt in AnswerFormat:
        score = greedy_mcq_accuracy(engine, questions, fmt, max_new_tokens=16)
        assert (score.n, score.extra["truncated"], score.extra["truncated_share"]) == (3, 3, 1.0)
        assert sum(score.extra["no_answer_causes"].values()) == sum(p is None for p in score.predictions)
        passk = passk_mcq_accuracy(engine, questions[:2], fmt, k=2, max_new_tokens=8)
        assert passk.extra["truncated"] == 2
        if fmt is AnswerFormat.LETTER:
            answer = letter_answer(engine, questions[2])
            assert set(answer["probabilities"]) == set("ABCDE") and answer["answer"] in "ABCDE"
        else:
            ids, params = answer_request(engine, questions[2], fmt)
            answer = read_answer(questions[2], fmt, engine.generate([ids], params)[0][0].text)
            assert answer["answer"] in tuple("ABCDE") or answer["cause"] in NO_ANSWER_CAUSES
    with pytest.raises(DataError, match="--max-new-tokens 250 leaves no room for a prompt in the model's 256-token"):
        greedy_mcq_accuracy(engine, questions, AnswerFormat.TEXT, max_new_tokens=250)


# ------------------------------------------------------------------ the medical suite
def _suite_fixtures(root: Path) -> Path:
    """Three questions per leaderboard task, each in its own hub schema (and MMLU's CSV and parquet)."""
    import pandas as pd

    root.mkdir()
    _jsonl(root / "medqa_test.jsonl", [{"question": f"MedQA {i}?", "options": dict(zip("ABCD", LONG_OPTIONS.values())),
                                        "answer_idx": "ABCD"[i], "answer": "x", "meta_info": "step1"} for i in range(3)])
    _jsonl(root / "medmcqa.jsonl", [{"id": str(i), "question": f"MedMCQA {i}?", "opa": "0.5 mg", "opb": "5 mg",
                                     "opc": "50 mg", "opd": "<5%", "cop": i % 4, "exp": "e"} for i in range(40)])
    _jsonl(root / "pubmedqa_test.jsonl", [{"pubid": i, "question": f"PubMedQA {i}?",
                                           "context": {"contexts": [ABSTRACT]}, "final_decision": "yes"}
                                          for i in range(3)])
    (root / "mmlu" / "data").mkdir(parents=True)  # MMLU in subfolders, as people keep its release
    with (root / "mmlu" / "data" / "anatomy_test.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([[f"Anatomy {i}?", "Femur", "Tibia", "Ulna", "Radius", "B"] for i in range(3)])
    mmlu = [{"question": f"MMLU {i}?", "subject": "x", "choices": ["w", "x", "y", "z"], "answer": 1} for i in range(3)]
    pd.DataFrame(mmlu).to_parquet(root / "mmlu" / "mmlu-clinical-knowledge_test.parquet")
    for task in ("college_biology", "college_medicine", "medical_genetics", "professional_medicine"):
        _jsonl(root / "mmlu" / f"mmlu-{task.replace('_', '-')}_test.jsonl", mmlu)
    return root


@pytest.mark.fast
def test_medical_suite_table(tmp_path: Path, tiny_tokenizer, capsys: pytest.CaptureFixture) -> None:
    from pure_transformer.checkpoint.store import save_checkpoint, step_dir
    from pure_transformer.evaluate import main as evaluate_main

    torch.manual_seed(0)
    ckpt = step_dir(tmp_path / "run", 1)
    save_checkpoint(ckpt, build_model(CFG), {"kind": "pretrain", "step": 1, "model_config": CFG.to_dict(),
                                            "tokenizer": "tokenizer.json"},
                    files={"tokenizer.json": tiny_tokenizer.hf.to_str()})
    data = _suite_fixtures(tmp_path / "data")
    out = tmp_path / "suite.json"
    evaluate_main(["--checkpoint", str(ckpt), "--suite", "medical", "--data-dir", str(data), "--output", str(out),
                   "--no-progress"])
    rows = {r["task"]: r for r in json.loads(out.read_text())}
    assert len(rows) == 9 and set(rows) >= {"medqa", "medmcqa", "pubmedqa", "mmlu-anatomy"}
    assert rows["pubmedqa"]["chance"] == pytest.approx(1 / 3) and rows["pubmedqa"]["majority"] == 1.0
    assert rows["mmlu-anatomy"]["n"] == 3 and rows["mmlu-anatomy"]["source"].endswith("anatomy_test.csv")
    # a file naming no split is scored whole (the ledger, not a hash, decides what is left out)
    assert rows["medmcqa"]["n"] == 40
    for r in rows.values():
        assert 0 <= r["ci95"][0] <= r["accuracy"] <= r["ci95"][1] <= 1 and r["ci95"][1] > r["ci95"][0]
    # each task scored with its lm-eval task's prompt and choices (tests/test_lm_eval_tasks.py checks them)
    assert {r["lm_eval_task"] for r in rows.values()} == {"medqa_4options", "medmcqa", "pubmedqa", "mmlu_anatomy",
                                                          "mmlu_clinical_knowledge", "mmlu_college_biology",
                                                          "mmlu_college_medicine", "mmlu_medical_genetics",
                                                          "mmlu_professional_medicine"}
    table = out.with_suffix(".md").read_text()
    assert table.count("\n") == 11 and "| pubmedqa | 3 |" in table and "| truncated |" in table
    assert table.rstrip().endswith("| mmlu_professional_medicine |")
    printed = capsys.readouterr().out
    assert "mmlu-professional-medicine" in printed and "majority" in printed


@pytest.mark.fast
def test_suite_names_missing_files_first_and_keeps_what_it_scored(tmp_path: Path, tiny_tokenizer,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """A task with no file is one line naming the file names looked for, before any scoring; a task whose
    file fails to read does not throw away the others: they are printed and written, then one error line."""
    from pure_transformer.checkpoint.store import save_checkpoint, step_dir
    from pure_transformer.evaluate import main as evaluate_main

    ckpt = step_dir(tmp_path / "run", 1)
    save_checkpoint(ckpt, build_model(CFG), {"kind": "pretrain", "step": 1, "model_config": CFG.to_dict(),
                                            "tokenizer": "tokenizer.json"},
                    files={"tokenizer.json": tiny_tokenizer.hf.to_str()})
    data = _suite_fixtures(tmp_path / "data")
    (data / "mmlu" / "data" / "anatomy_test.csv").unlink()
    out = tmp_path / "suite.json"
    args = ["--checkpoint", str(ckpt), "--suite", "medical", "--data-dir", str(data), "--output", str(out),
            "--no-progress"]
    assert evaluate_main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not out.exists()  # nothing scored: the check came first
    assert captured.err.count("\n") == 1 and "has no file for 1 of the 9 tasks: mmlu-anatomy (" in captured.err
    assert "anatomy_test.csv" in captured.err and "mmlu-anatomy_test.jsonl" in captured.err
    with (data / "anatomy_test.csv").open("w", newline="") as handle:  # found at the top as well as below
        csv.writer(handle).writerows([[f"Anatomy {i}?", "Femur", "Tibia", "Ulna", "Radius", "B"] for i in range(3)])
    (data / "pubmedqa_test.jsonl").write_text('{"pubid": 1, "question": "broken"}\n{not json\n')
    assert evaluate_main(args) == 2
    captured = capsys.readouterr()
    rows = {r["task"] for r in json.loads(out.read_text())}
    assert len(rows) == 8 and "pubmedqa" not in rows and "mmlu-anatomy" in captured.out
    assert captured.err.startswith("error: 1 of the 9 tasks failed, the others are above: pubmedqa: ")
    assert captured.err.count("\n") == 1


def test_suite_without_data_offline_is_one_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "pure_transformer.evaluate", "--checkpoint", str(tmp_path),
                             "--suite", "medical"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and result.stderr.startswith("error:")


@pytest.mark.fast
def test_tokenizer_trains_on_mcq_files_and_warns_when_short(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pure_transformer.tokenizer.bpe import iter_training_texts, train_tokenizer

    path = _jsonl(tmp_path / "medmcqa.jsonl", [{"question": "Which drug?", "opa": "Warfarin", "opb": "Heparin",
                                                "opc": "Aspirin", "opd": "Insulin", "cop": 0, "exp": "VKORC1."}])
    (text,) = list(iter_training_texts([str(path)]))
    assert "Which drug?" in text and "D. Insulin" in text and "VKORC1." in text
    bad = _jsonl(tmp_path / "bad.jsonl", [{"prompt": "x"}])
    with pytest.raises(DataError, match="has no text field 'text' and is not an MCQ"):
        list(iter_training_texts([str(bad)]))
    tok = train_tokenizer([text] * 3, 2048, tmp_path / "tok", show_progress=False)
    err = capsys.readouterr().err
    assert f"warning: the trained vocabulary has {tok.vocab_size} tokens, fewer than the 2048 asked" in err


@pytest.mark.fast
def test_pubmedqa_in_medqa_schema_asks_its_abstract_once(tmp_path: Path, tiny_tokenizer,
                                                         capsys: pytest.CaptureFixture) -> None:
    """PubMedQA exported in MedQA's schema keeps its abstract inside ``question``: with a ``Question:`` line
    it is split into context and question and prompted once; without one, the pubmedqa task refuses it
    (its prompt would read ``Abstract: \\nQuestion: <abstract + question>``)."""
    from pure_transformer.checkpoint.store import save_checkpoint, step_dir
    from pure_transformer.eval.conventions import convention_for
    from pure_transformer.evaluate import main as evaluate_main

    options = {"A": "yes", "B": "no", "C": "maybe"}
    split = normalize_mcq({"question": f"Context: {ABSTRACT}\nQuestion: Do statins prevent events?",
                           "options": options, "answer_idx": "A"})
    assert (split.context, split.question) == (ABSTRACT, "Do statins prevent events?")
    prompt = convention_for("pubmedqa").prompt(split)
    assert prompt == f"Abstract: {ABSTRACT}\nQuestion: Do statins prevent events?\nAnswer:"
    assert prompt.count("Statins lower") == 1
    plain = normalize_mcq({"question": "Do statins prevent events?", "options": options, "answer_idx": "A"})
    assert plain.context is None and plain.question == "Do statins prevent events?"  # nothing to split

    ckpt = step_dir(tmp_path / "run", 1)
    save_checkpoint(ckpt, build_model(CFG), {"kind": "pretrain", "step": 1, "model_config": CFG.to_dict(),
                                            "tokenizer": "tokenizer.json"},
                    files={"tokenizer.json": tiny_tokenizer.hf.to_str()})
    glued = _jsonl(tmp_path / "pubmedqa_test.jsonl", [{"question": f"{ABSTRACT} Do statins prevent events?",
                                                       "options": options, "answer_idx": "A"}] * 3)
    assert evaluate_main(["--checkpoint", str(ckpt), "--task", "pubmedqa", "--data-path", str(glued),
                          "--mode", "loglikelihood", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 3 of the 3 pubmedqa questions have no abstract") and err.count("\n") == 1
