"""The model card (``README.md``) of an export, written from the checkpoint's own metadata.

Everything in it is read, not typed: the architecture and parameter count from
the model config, the training data and tokens per source from the pretraining
checkpoint (an RL checkpoint points at it through ``init_checkpoint``), the GRPO
settings from the RL metadata, and the evaluation results, with their 95%
intervals, from ``evaluate --output`` reports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..data.ledger import LEDGER_FILE, Ledger
from ..data.loader import tokens_per_source
from ..errors import DataError
from ..model.config import ModelConfig

WARNING = ("> **Not medical advice.** This is a small research model. It answers multiple-choice questions "
           "badly by clinical standards, invents facts with confidence, and must never be used to diagnose, "
           "treat or advise anyone.")


def read_reports(paths: Sequence[str | Path]) -> list[dict]:
    """The mode records of ``evaluate --output`` files; a file that is not one is a one-line error."""
    records = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"cannot read evaluation report '{path}': {e}") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) and {"mode", "accuracy", "n"} <= r.keys()
                                                 for r in data):
            raise DataError(f"'{path}' is not an evaluate --output report (a list of mode records)")
        records += data
    return records


def _pretrain_meta(meta: dict) -> dict | None:
    if meta.get("kind") == "pretrain":
        return meta
    init = meta.get("init_checkpoint")
    file = Path(init) / "meta.json" if init else None
    if file is None or not file.is_file():
        return None
    return json.loads(file.read_text())


def _training_section(meta: dict) -> list[str]:
    lines = ["## Training", ""]
    if meta.get("kind") == "import":  # an open checkpoint, not trained here
        return lines + [f"Imported with `pure-transformer import` from `{meta.get('source')}` "
                        f"({meta.get('hf_architecture')}); see the source's own model card for its training "
                        "and license.", ""]
    pretrain = _pretrain_meta(meta)
    if pretrain is None:
        lines += ["Pretraining metadata was not found next to this checkpoint "
                  f"(`init_checkpoint`: `{meta.get('init_checkpoint')}`).", ""]
    else:
        cfg = pretrain.get("config", {})
        lines += [f"Pretrained from random weights on {pretrain.get('tokens_seen', 0):,} tokens "
                  f"({pretrain.get('step')} steps, sequence length {cfg.get('seq_len')}, peak learning rate "
                  f"{cfg.get('peak_lr')}, MCQs written in the `{cfg.get('answer_format', 'letter')}` format).", "",
                  "| source | mixture weight | tokens seen |", "|---|---:|---:|"]
        seen = tokens_per_source(pretrain.get("data") or [])
        for name, weight in (cfg.get("sources") or {}).items():
            lines.append(f"| {name} | {weight} | {seen.get(name, 0):,} |")
        lines.append("")
        lines += _selection(pretrain)
    if meta.get("kind") == "rl":
        rl = meta.get("config", {})
        lines += [f"Then fine-tuned with GRPO for {meta.get('step')} steps on `{meta.get('source')}` "
                  f"({rl.get('prompts_per_step')} questions x {rl.get('samples_per_prompt')} samples per step, "
                  f"reward: the option named on the final answer line, KL coefficient {rl.get('kl_coef')}, "
                  f"answer format `{meta.get('answer_format')}`).", ""]
    return lines


def _selection(pretrain: dict) -> list[str]:
    """Which metric picked the pretraining run's ``best/``, and where this model stands to it."""
    best = pretrain.get("best")
    if not isinstance(best, dict) or not best.get("metric"):
        return []
    if best["metric"] == "val_mcq_acc":
        n = best.get("questions")
        fmt = pretrain.get("config", {}).get("answer_format", "letter")
        what = f"greedy accuracy on {n or 'the'} validation questions in the `{fmt}` format"
    else:
        what = "validation loss; the mixture held no multiple-choice source"
    return [f"Checkpoint selection: the pretraining run's `best/` is its validation step with the best "
            f"`{best['metric']}` ({what}), step {best.get('step')} at {best.get('value'):.4g}. This model comes "
            f"from pretraining step {pretrain.get('step')}"
            + (", that step." if best.get("step") == pretrain.get("step") else "."), ""]


def _results_section(reports: Sequence[dict]) -> list[str]:
    if not reports:
        return ["## Evaluation", "", "No evaluation report was given to the export (`--report`).", ""]
    lines = ["## Evaluation", "", "| task | split | mode | n | accuracy | 95% CI |", "|---|---|---|---:|---:|---|"]
    for r in reports:
        low, high = r.get("ci95", [float("nan")] * 2)
        mode = r["mode"] + (f" (options rotated by {r['rotate']})" if r.get("rotate") else "")
        lines.append(f"| {r.get('task', '?')} | {r.get('split', '?')} | {mode} | {r['n']} | {r['accuracy']:.3f} "
                     f"| [{low:.3f}, {high:.3f}] |")
    synthetic = any(r.get("task") == "synthetic" for r in reports)
    lines.append("")
    if synthetic:
        lines += ["`synthetic` is the package's bundled offline question set, generated from its own fact base: "
                  "it shows that training worked, not how the model would score on USMLE.", ""]
    return lines


def _ledger_section(ledger: Ledger | None) -> list[str]:
    if ledger is None:
        return ["This checkpoint predates training ledgers: which evaluation questions it saw cannot be checked.", ""]
    lines = [f"`{LEDGER_FILE}` fingerprints the {ledger.summary()} the model was trained on, its parent "
             "checkpoints' included; `evaluate` leaves those out of every score."]
    if ledger.unseen:
        lines.append(f"It descends from {', '.join(ledger.unseen)}, an open model whose own pretraining data no "
                     "ledger records: scores on public benchmarks may include questions it read before.")
    return [*lines, ""]


def model_card(meta: dict, cfg: ModelConfig, num_params: int, reports: Sequence[dict] = (),
               ledger: Ledger | None = None) -> str:
    """Markdown, with Hugging Face front matter, for the export of a checkpoint with ``meta``."""
    kind = {"rl": "GRPO fine-tuned", "import": "imported"}.get(meta.get("kind"), "pretrained")
    front = ["---", "license: mit", "library_name: transformers", "pipeline_tag: text-generation",
             "tags: [pure_transformer, llama, medical, multiple-choice]", "---", ""]
    body = [f"# pure_transformer {kind} model ({num_params / 1e6:.1f}M parameters)", "", WARNING, "",
            "## Model", "",
            f"A decoder-only Llama-architecture Transformer trained with pure_transformer: {cfg.n_layers} layers, "
            f"width {cfg.dim}, {cfg.n_heads} attention heads ({cfg.kv_heads} key/value), SwiGLU width {cfg.ffn_dim}, "
            f"vocabulary {cfg.vocab_size}, context {cfg.max_seq_len} tokens, "
            f"{'tied' if cfg.tie_embeddings else 'untied'} embeddings; "
            f"{num_params:,} parameters. It loads as `LlamaForCausalLM`; the tokenizer prepends the end-of-text "
            f"token that starts every training document, so `tokenizer(prompt)` needs no extra care.", ""]
    use = ["## Intended use", "",
           "Research on training and reinforcement-learning small models for medical multiple-choice questions. "
           "Ask a question the way training did: `Question: ...`, the options `A. ...` to `D. ...`, then "
           "`Answer:` (or `Explanation:` for the explanation-first format). Out of scope: any clinical, "
           "diagnostic or patient-facing use.", "",
           "## License", "", "MIT, as the pure_transformer code. The training data keep their own licenses.", ""]
    return "\n".join(front + body + _training_section(meta) + _ledger_section(ledger) + _results_section(reports)
                     + use)

