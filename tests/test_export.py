"""The export in the tools people use: plain transformers calls give our own answers
(tokenizer, logits, greedy generation, chat template), the folder is complete and
readable, the model card is written from metadata, and lm-evaluation-harness scores
it without special flags exactly as ``evaluate --mode loglikelihood`` does."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import torch

from pure_transformer.checkpoint.store import save_checkpoint, step_dir
from pure_transformer.inference.engine import Engine, SamplingParams, stream_text
from pure_transformer.mcq.chat import chat_prompt
from pure_transformer.model.config import ModelConfig
from pure_transformer.model.transformer import build_model

transformers = pytest.importorskip("transformers")

CFG = ModelConfig(vocab_size=512, dim=64, n_layers=2, n_heads=4, ffn_dim=128, max_seq_len=512)
PROMPTS = ["Question: A 45-year-old man presents with fever. Answer:", "The first-line drug for", "a",
           "Explanation:\n A characteristic adverse effect of"]


@pytest.mark.fast
def test_plain_tokenizer_call_gives_the_ids_we_score(exported, tiny_tokenizer) -> None:
    _, hf_dir = exported
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    for prompt in PROMPTS:
        assert hf_tok(prompt)["input_ids"] == [tiny_tokenizer.eot_id] + tiny_tokenizer.encode(prompt)
        assert hf_tok(prompt, add_special_tokens=False)["input_ids"] == tiny_tokenizer.encode(prompt)
    assert hf_tok.bos_token_id == hf_tok.eos_token_id == tiny_tokenizer.eot_id
    assert hf_tok.model_max_length == CFG.max_seq_len


@pytest.mark.fast
@pytest.mark.parametrize("tied", [False, True])
def test_logit_parity(tmp_path: Path, random_checkpoint, tied: bool) -> None:
    from pure_transformer.checkpoint.export import export_hf
    from pure_transformer.checkpoint.store import load_model

    ckpt = random_checkpoint(tmp_path, CFG.replace(tie_embeddings=tied, n_kv_heads=2))
    export_hf(ckpt, tmp_path / "hf")
    ours = load_model(ckpt)[0].eval()
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    x = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")(PROMPTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(x)[1], atol=1e-4, rtol=1e-4)


@pytest.mark.fast
def test_greedy_generate_matches_ours(exported) -> None:
    from pure_transformer.checkpoint.store import load_model

    ckpt, hf_dir = exported
    model, tok, _, _ = load_model(ckpt)
    engine = Engine(model.eval(), tok)
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    params = SamplingParams(max_new_tokens=20, temperature=0.0)
    for prompt in PROMPTS:
        inputs = hf_tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = hf.generate(**inputs, max_new_tokens=20, do_sample=False)
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        ours = engine.generate([[tok.eot_id] + tok.encode(prompt)], params)[0][0]
        assert new == ours.tokens
        text = hf_tok.decode(new, skip_special_tokens=True)
        assert text == tok.decode([t for t in ours.tokens if t != tok.eot_id])
        # `generate` streams the same text (less a trailing half character when the budget cuts one)
        assert text.rstrip("\ufffd") == "".join(stream_text(engine, prompt, params))


@pytest.mark.fast
def test_chat_template_is_the_servers(exported) -> None:
    _, hf_dir = exported
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    chats = [[{"role": "user", "content": "hi"}],
             [{"role": "system", "content": " Be brief. "}, {"role": "system", "content": "Cite."},
              {"role": "user", "content": "What treats asthma?\n"}, {"role": "assistant", "content": "Albuterol."},
              {"role": "user", "content": "Adverse effect?"}]]
    for messages in chats:
        assert hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == chat_prompt(messages)
    assert chat_prompt(chats[1]) == ("Be brief.\n\nCite.\n\nUser: What treats asthma?\nAssistant: Albuterol.\n"
                                     "User: Adverse effect?\nAssistant:")


@pytest.mark.fast
def test_folder_is_complete_and_readable(exported, tiny_tokenizer) -> None:
    _, hf_dir = exported
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["dtype"] == "float32" and config["transformers_version"]
    assert config["pure_transformer"]["answer_format"] == "explain"
    gen = transformers.GenerationConfig.from_pretrained(hf_dir)
    assert (gen.eos_token_id, gen.pad_token_id) == (tiny_tokenizer.eot_id, tiny_tokenizer.pad_id)
    assert gen.do_sample and gen.temperature == 0.8
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "README.md"):
        mode = stat.S_IMODE((hf_dir / name).stat().st_mode)
        assert mode & 0o044 == 0o044, f"{name} is {oct(mode)}: others cannot read it"


@pytest.mark.fast
def test_model_card_from_metadata_and_reports(tmp_path: Path, tiny_tokenizer, random_checkpoint) -> None:
    from pure_transformer.checkpoint.export import export_hf

    pretrain = save_checkpoint(step_dir(tmp_path / "pre", 5), build_model(CFG),
                               {"kind": "pretrain", "step": 5, "model_config": CFG.to_dict(), "tokens_seen": 10240,
                                "config": {"sources": {"fineweb-edu": 0.85, "medqa": 0.15}, "seq_len": 512,
                                           "peak_lr": 0.003, "answer_format": "letter"},
                                "data": [{"source_tokens": {"fineweb-edu": 8000, "medqa": 1000}},
                                         {"source_tokens": {"fineweb-edu": 1000, "medqa": 240}}],
                                "best": {"metric": "val_mcq_acc", "value": 0.40625, "step": 4, "val_loss": 2.5,
                                         "questions": 64},
                                "tokenizer": "tokenizer.json"}, files={"tokenizer.json": tiny_tokenizer.hf.to_str()})
    ckpt = random_checkpoint(tmp_path, CFG, meta={"init_checkpoint": str(pretrain), "source": "medqa",
                                                        "config": {"prompts_per_step": 16, "samples_per_prompt": 16,
                                                                   "kl_coef": 0.01}})
    report = tmp_path / "eval.json"
    report.write_text(json.dumps([{"task": "medqa", "split": "test", "mode": "loglikelihood", "n": 1273,
                                   "accuracy": 0.2616, "ci95": [0.2380, 0.2866]}]))
    card = (export_hf(ckpt, tmp_path / "hf", [report]) / "README.md").read_text()
    n = build_model(CFG).num_params()
    assert card.startswith("---\nlicense: mit\n") and "**Not medical advice.**" in card
    assert f"{n:,} parameters" in card
    assert "| fineweb-edu | 0.85 | 9,000 |" in card and "| medqa | 0.15 | 1,240 |" in card
    assert "GRPO for 7 steps on `medqa` (16 questions x 16 samples" in card
    # Which metric chose best/, and that this model is not that step.
    assert ("`best/` is its validation step with the best `val_mcq_acc` (greedy accuracy on 64 validation questions "
            "in the `letter` format), step 4 at 0.4062. This model comes from pretraining step 5.") in card
    assert "| medqa | test | loglikelihood | 1273 | 0.262 | [0.238, 0.287] |" in card


@pytest.mark.fast
def test_bad_report_is_one_line_and_writes_nothing(tmp_path: Path, random_checkpoint,
                                                   capsys: pytest.CaptureFixture) -> None:
    from pure_transformer.cli import main as cli_main

    ckpt = random_checkpoint(tmp_path, CFG)
    (tmp_path / "notes.json").write_text('{"accuracy": 1}')
    for report, message in ((tmp_path / "missing.json", "cannot read evaluation report"),
                            (tmp_path / "notes.json", "is not an evaluate --output report")):
        code = cli_main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "hf"), "--report", str(report)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "hf").exists()


def test_lm_eval_scores_the_export_as_evaluate_does(exported, tiny_tokenizer) -> None:
    # No model_args beyond the folder: the tokenizer's own BOS makes lm-eval's contexts ours.
    lm_eval = pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install -e '.[dev]')")
    from lm_eval.tasks import TaskManager

    from pure_transformer.bundled.synthetic import bundled_corpus
    from pure_transformer.checkpoint.store import load_model
    from pure_transformer.eval.harness import TASKS_DIR
    from pure_transformer.eval.scoring import continuation_logprobs, letter_scores
    from pure_transformer.mcq.prompts import cloze_prompt

    ckpt, hf_dir = exported
    model, tok, _, _ = load_model(ckpt)
    questions = bundled_corpus().mcq["test"][:12]
    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={hf_dir},dtype=float32", device="cpu",
                                  tasks=["pure_transformer_mcq", "pure_transformer_mcq_cloze"], batch_size=4,
                                  task_manager=TaskManager(include_path=str(TASKS_DIR), metadata={"limit": 12}),
                                  log_samples=True)
    letters = torch.stack(letter_scores(model.eval(), tok, questions))  # (12, 4): four options each
    samples = sorted(out["samples"]["pure_transformer_mcq"], key=lambda s: s["doc_id"])
    assert len(samples) == 12
    for s, ours in zip(samples, letters.tolist()):
        assert [r[0] for r in s["filtered_resps"]] == pytest.approx(ours, abs=1e-4)
    assert out["results"]["pure_transformer_mcq"]["acc,none"] == pytest.approx(
        sum("ABCD"[int(row.argmax())] == q.answer for row, q in zip(letters, questions)) / 12)
    cloze = sorted(out["samples"]["pure_transformer_mcq_cloze"], key=lambda s: s["doc_id"])
    for s, q in zip(cloze, questions):
        ours = continuation_logprobs(model, tok, [(cloze_prompt(q), f" {q.options[k]}") for k in "ABCD"])
        assert [r[0] for r in s["filtered_resps"]] == pytest.approx(ours.tolist(), abs=1e-4)


def test_lm_eval_local_completions_through_our_server(exported, serving) -> None:
    # lm-eval's OpenAI-compatible client against `serve`: its own requests (token ids, echo, logprobs)
    # and its own parser, scored against `evaluate`'s letter log-likelihoods.
    lm_eval = pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install -e '.[dev]')")
    from lm_eval.tasks import TaskManager

    from pure_transformer.bundled.synthetic import bundled_corpus
    from pure_transformer.checkpoint.store import load_model
    from pure_transformer.eval.harness import TASKS_DIR
    from pure_transformer.eval.scoring import letter_scores
    from pure_transformer.serving.app import create_app

    ckpt, hf_dir = exported
    model, tok, _, _ = load_model(ckpt)
    with serving(create_app(model.eval(), tok, model_name="tiny")) as url:
        out = lm_eval.simple_evaluate(
            model="local-completions", tasks=["pure_transformer_mcq"], log_samples=True,
            model_args=f"model=tiny,base_url={url}/v1/completions,tokenizer={hf_dir},tokenizer_backend=huggingface,"
                       "tokenized_requests=True,num_concurrent=1,max_retries=1,batch_size=4",
            task_manager=TaskManager(include_path=str(TASKS_DIR), metadata={"limit": 8}))
    letters = torch.stack(letter_scores(model, tok, bundled_corpus().mcq["test"][:8]))  # (8, 4)
    samples = sorted(out["samples"]["pure_transformer_mcq"], key=lambda s: s["doc_id"])
    assert len(samples) == 8
    for s, ours in zip(samples, letters.tolist()):
        assert [r[0] for r in s["filtered_resps"]] == pytest.approx(ours, abs=1e-4)
