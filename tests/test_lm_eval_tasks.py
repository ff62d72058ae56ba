"""lm-evaluation-harness's own task files for the medical suite, run on the export, agree with ``evaluate``.

Each lm-eval YAML (with its preprocess module or template) is copied unchanged but for
where it reads its data: ``dataset_path: json`` and a local fixture in the schema that
YAML reads (``tests/fixtures/lm_eval``). Every per-choice log-likelihood lm-eval logs must
equal ours under the task's convention (:mod:`pure_transformer.eval.conventions`), and so
must the accuracies, so a number from ``evaluate --task`` compares with a published one.
One PubMedQA abstract is longer than the model's context: both sides keep the sequence's end.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from pure_transformer.data.registry import load_mcqs
from pure_transformer.eval.conventions import GENERIC, convention_for
from pure_transformer.eval.scoring import letter_scores
from pure_transformer.mcq.record import MCQ

FIXTURES = Path(__file__).parent / "fixtures" / "lm_eval"
MMLU_SUBJECTS = ("anatomy", "clinical_knowledge", "college_biology", "college_medicine", "medical_genetics",
                 "professional_medicine")


@dataclass(frozen=True)
class LmEvalTask:
    """One lm-eval task: its folder under ``lm_eval/tasks``, the files it needs, our task name, and the
    fixture (under :data:`FIXTURES`) with the split that both lm-eval and ``evaluate`` score."""

    name: str
    folder: str
    files: tuple[str, ...]
    ours: str
    file: str
    split: str

    @property
    def fixture(self) -> Path:
        return FIXTURES / self.file


TASKS: tuple[LmEvalTask, ...] = (
    LmEvalTask("medqa_4options", "medqa", ("medqa.yaml", "preprocess_medqa.py"), "medqa",
               "medqa_4options_test.jsonl", "test"),
    LmEvalTask("medmcqa", "medmcqa", ("medmcqa.yaml", "utils_medmcqa.py"), "medmcqa",
               "medmcqa_validation.jsonl", "validation"),
    LmEvalTask("pubmedqa", "pubmedqa", ("pubmedqa.yaml", "preprocess_pubmedqa.py"), "pubmedqa",
               "pubmedqa_test.jsonl", "test"),
    *(LmEvalTask(f"mmlu_{s}", "mmlu/default", (f"mmlu_{s}.yaml", "_default_template_yaml"),
                 f"mmlu-{s.replace('_', '-')}", "mmlu_test.jsonl", "test") for s in MMLU_SUBJECTS),
)


def localise(task: LmEvalTask, tasks_root: Path, out: Path) -> None:
    """Copy ``task``'s files into ``out``, pointing its dataset at the fixture: ``dataset_path: json`` with
    the fixture as every split it may ask for (test, validation, few-shot), and no ``dataset_name``."""
    files = {split: str(task.fixture) for split in ("train", "validation", "test", "dev")}
    pointed = 0
    for name in task.files:
        text = (tasks_root / task.folder / name).read_text()
        if not name.endswith(".py"):
            text, count = re.subn(r'^"?dataset_path"?:.*$', f"dataset_path: json\ndataset_kwargs: "
                                  f"{json.dumps({'data_files': files})}", text, flags=re.M)
            text = re.sub(r'^"?dataset_name"?:.*\n', "", text, flags=re.M)
            pointed += count
        (out / name).write_text(text)
    assert pointed == 1, f"{task.name}: lm-eval's files name their dataset {pointed} times; expected once"


@pytest.fixture(scope="module")
def lm_eval_run(exported, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """lm-eval's results and samples for every task in :data:`TASKS`, on the exported model."""
    lm_eval = pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install -e '.[dev]')")
    from lm_eval.tasks import TaskManager

    _, hf_dir = exported
    include = tmp_path_factory.mktemp("lm_eval_tasks")
    for task in TASKS:
        localise(task, Path(lm_eval.__file__).parent / "tasks", include)
    return lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={hf_dir},dtype=float32", device="cpu",
                                   tasks=[t.name for t in TASKS], batch_size=8, log_samples=True,
                                   task_manager=TaskManager(include_path=str(include), include_defaults=False))


@pytest.mark.fast
@pytest.mark.parametrize("task", TASKS, ids=[t.name for t in TASKS])
def test_lm_eval_task_scores_each_choice_as_evaluate_does(task: LmEvalTask, lm_eval_run: dict, exported) -> None:
    from pure_transformer.checkpoint.store import load_model
    from pure_transformer.eval.run import evaluate

    ckpt, _ = exported
    model, tok, _, _ = load_model(ckpt)
    questions = load_mcqs(str(task.fixture), task.split)  # what evaluate --data-path reads
    convention = convention_for(task.ours)
    assert convention.lm_eval_task == task.name
    ours = letter_scores(model.eval(), tok, questions, convention)
    samples = sorted(lm_eval_run["samples"][task.name], key=lambda s: s["doc_id"])
    assert len(samples) == len(questions) >= 4
    for s, q, scores in zip(samples, questions, ours):
        # the same context and continuations, then the same number for each choice
        assert [tuple(a) for a in s["arguments"]] == convention.pairs(q)
        assert [r[0] for r in s["filtered_resps"]] == pytest.approx(scores.tolist(), abs=1e-4)
    report = evaluate(str(ckpt), task.ours, task.split, data_path=str(task.fixture), modes=("loglikelihood",),
                      device="cpu", progress=False)[0]
    assert report["lm_eval_task"] == task.name
    assert report["accuracy"] == pytest.approx(lm_eval_run["results"][task.name]["acc,none"])
    assert [q["prediction"] for q in report["questions"]] == ["ABCD"[int(s.argmax())] for s in ours]


@pytest.mark.fast
def test_cli_evaluate_reports_lm_evals_accuracy(lm_eval_run: dict, exported, tmp_path: Path) -> None:
    from pure_transformer.cli import main as cli_main

    ckpt, _ = exported
    out = tmp_path / "report.json"
    assert cli_main(["evaluate", "--checkpoint", str(ckpt), "--task", "medmcqa", "--split", "validation",
                     "--data-path", str(FIXTURES / "medmcqa_validation.jsonl"), "--mode", "loglikelihood",
                     "--device", "cpu", "--no-progress", "--output", str(out)]) == 0
    (report,) = json.loads(out.read_text())
    assert report["n"] == 5 and report["lm_eval_task"] == "medmcqa"
    assert report["accuracy"] == pytest.approx(lm_eval_run["results"]["medmcqa"]["acc,none"])


@pytest.mark.fast
def test_conventions_by_task_name() -> None:
    mcq = MCQ(" Which bone? ", {"A": "Ulna", "B": "Femur"}, "A", context="Part one.\nPart two.")
    mmlu = convention_for("mmlu-college-medicine")
    assert mmlu.prompt(mcq) == ("The following are multiple choice questions (with answers) about college "
                                "medicine.\n\nWhich bone?\nA. Ulna\nB. Femur\nAnswer:")
    assert convention_for("pubmedqa").pairs(mcq) == [("Abstract: Part one.\nPart two.\nQuestion:  Which bone? \n"
                                                      "Answer:", f" {text}") for text in ("Ulna", "Femur")]
    assert convention_for("medmcqa").prompt(mcq).startswith("Question:  Which bone? \nChoices:\nA. Ulna\n")
    # No lm-eval task: medqa_4options's prompt, for any option count, with the context first
    for task in ("medqa5", "medbullets", "synthetic", "no-such-task"):
        assert convention_for(task) is GENERIC
    assert GENERIC.pairs(mcq)[1] == ("Context: Part one.\nPart two.\nQuestion:  Which bone? \nA. Ulna\nB. Femur\n"
                                     "Answer:", " B")


@pytest.mark.fast
def test_pubmedqa_scores_are_one_per_word_and_predict_letters(exported) -> None:
    from pure_transformer.checkpoint.store import load_model
    from pure_transformer.eval.scoring import continuation_logprobs, loglikelihood_mcq_accuracy

    model, tok, _, _ = load_model(exported[0])
    questions = load_mcqs(str(FIXTURES / "pubmedqa_test.jsonl"), "test")
    convention = convention_for("pubmedqa")
    scores = letter_scores(model, tok, questions, convention)
    words = continuation_logprobs(model, tok, [(convention.prompt(questions[0]), f" {w}") for w in
                                               ("yes", "no", "maybe")])
    assert [s.shape[0] for s in scores] == [3] * len(questions) and torch.allclose(scores[0], words)
    # The last abstract overflows the 512-token context, so the lm-eval comparison covers left truncation too.
    assert len(tok.encode(convention.prompt(questions[-1]))) > model.cfg.max_seq_len
    score = loglikelihood_mcq_accuracy(model, tok, questions, convention=convention)
    assert score.predictions == ["ABC"[int(s.argmax())] for s in scores] and 0.0 <= score.extra["ece"] <= 1.0
