"""Importing open checkpoints (Llama-3.x/SmolLM2, Qwen2.5, Qwen3), checked against transformers itself.

Each family is a tiny random model built with transformers' own config class, scaled down but
keeping what distinguishes it: GQA, Llama-3's RoPE scaling and tied embeddings (Llama-3.2,
SmolLM2), Qwen2's q/k/v biases, Qwen3's QK-norm and a head width other than hidden / heads,
and a vocabulary padded past the tokenizer's. Every weight is drawn at random (biases and norm
gains included: zeros and ones would hide a mapping bug). No network.
"""

from __future__ import annotations

import copy
import json
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import Regex, decoders, models, pre_tokenizers, processors, trainers

from pure_transformer.checkpoint.export import export_hf
from pure_transformer.checkpoint.open_weights import import_checkpoint
from pure_transformer.checkpoint.store import load_model
from pure_transformer.cli import main
from pure_transformer.eval.run import evaluate
from pure_transformer.inference.engine import Engine, SamplingParams
from pure_transformer.mcq.chat import chat_prompt
from pure_transformer.model.hf import load_hf_model
from pure_transformer.model.transformer import rope_frequencies
from pure_transformer.tokenizer.bpe import Tokenizer
from pure_transformer.tokenizer.chat import chat_ids

transformers = pytest.importorskip("transformers")

VOCAB = 320  # the model's rows; the tokenizer has fewer ids (a padded vocabulary, as Qwen's)
TEXTS = ["The patient presents with fever and cough. Question: which drug? Answer: A",
         "A 45-year-old man has chest pain radiating to the left arm; ECG shows ST elevation.",
         "Hello world, the quick brown fox jumps over the lazy dog 0123456789."] * 20
LLAMA_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# The two families' split patterns (their tokenizer.json's; transformers' Qwen2Tokenizer applies its own, this one).
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n'"
                  " + m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
                  "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
QWEN_TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def hf_config(family: str):
    """A scaled-down config of each family in transformers' own class."""
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  max_position_embeddings=256, rms_norm_eps=1e-6)
    if family == "llama3":  # Llama-3.2 / SmolLM2: GQA 4:1, llama3 RoPE scaling, tied head
        return transformers.LlamaConfig(**common, num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True,
                                        rope_theta=500000.0, rope_scaling={
                                            "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                            "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                                        bos_token_id=0, eos_token_id=1)
    if family == "qwen2":  # Qwen2.5: q/k/v biases, GQA 2:1, tied head
        return transformers.Qwen2Config(**common, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                        rope_theta=1000000.0, use_sliding_window=False)
    # Qwen3: per-head QK-norm, head_dim 32 != 64 / 4, untied head
    return transformers.Qwen3Config(**common, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                                    tie_word_embeddings=False, rope_theta=1000000.0, attention_bias=False)


def write_tokenizer(folder: Path, family: str) -> None:
    """A small byte-level BPE in the family's conventions: Llama-3 prepends <|begin_of_text|> in its
    post-processor and stops at <|end_of_text|>/<|eot_id|>; Qwen has no bos and stops at <|im_end|>/<|endoftext|>."""
    specials = LLAMA_SPECIALS if family == "llama3" else QWEN_SPECIALS
    tok = HFTokenizer(models.BPE())
    split = pre_tokenizers.Split(Regex(LLAMA3_SPLIT if family == "llama3" else QWEN_SPLIT), behavior="isolated")
    tok.pre_tokenizer = pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                                 use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if family == "llama3":
        tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                           special_tokens=[("<|begin_of_text|>", 0)])
        config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "chat_template": LLAMA_TEMPLATE}
        eos = [1, 2]
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        config = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                  "chat_template": QWEN_TEMPLATE}
        eos = [2, 0]
    tok.save(str(folder / "tokenizer.json"))
    config.update({"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                   "model_max_length": 256})
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))


@pytest.fixture(scope="module", params=["llama3", "qwen2", "qwen3"])
def family(request, tmp_path_factory) -> tuple[str, Path, torch.nn.Module]:
    """(family, its transformers folder, the transformers model), every weight random."""
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(hf_config(name), attn_implementation="eager").eval()
    with torch.no_grad():
        for pname, p in hf.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in pname else 0.1 * torch.randn_like(p))
    hf.save_pretrained(folder)
    write_tokenizer(folder, name)
    return name, folder, hf


def test_config_maps_every_knob(family) -> None:
    name, folder, hf = family
    cfg = load_hf_model(folder).cfg
    assert (cfg.qkv_bias, cfg.qk_norm) == (name == "qwen2", name == "qwen3")
    assert (cfg.n_heads, cfg.kv_heads, cfg.head_dim) == (4, 1 if name == "llama3" else 2, 32 if name == "qwen3" else 16)
    assert cfg.tie_embeddings == (name != "qwen3") and cfg.vocab_size == VOCAB and cfg.norm_eps == 1e-6
    assert cfg.rope_scaling == ("llama3" if name == "llama3" else None)


def test_rope_frequencies_equal_transformers(family) -> None:
    """Our inverse frequencies (llama3 scaling included) against transformers' own RoPE init."""
    name, folder, hf = family
    ours = rope_frequencies(load_hf_model(folder).cfg)
    theirs = hf.model.rotary_emb.inv_freq
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_logits_equal_transformers_on_a_padded_batch(family) -> None:
    """Right-padded batch: with an attention mask in transformers, unmasked in ours (causal
    attention never looks right), every real position's logits agree to 1e-5 in fp32."""
    name, folder, hf = family
    ours = load_hf_model(folder).eval()
    torch.manual_seed(1)
    lengths = [12, 7, 3]
    ids = torch.randint(0, 300, (3, 12))
    mask = (torch.arange(12)[None] < torch.tensor(lengths)[:, None]).long()
    ids = ids * mask  # pad id 0 on the right
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask).logits
        _, mine = ours(ids)
    real = mask.bool()
    delta = (mine[real] - theirs[real]).abs().max().item()
    print(f"\n{name}: max |delta logit| = {delta:.3g}")
    assert delta < 1e-5


def test_greedy_generation_matches_transformers_generate(family, tmp_path) -> None:
    """The imported checkpoint, loaded as evaluate loads it, decodes greedily with our engine token
    for token as transformers' generate does, both stopping at the family's end ids."""
    name, folder, hf = family
    ckpt = import_checkpoint(str(folder), tmp_path / "ckpt")
    model, tok, _, _ = load_model(ckpt)
    assert tok.start_ids == ([0] if name == "llama3" else [])  # Llama-3's <|begin_of_text|>; none for Qwen
    assert tok.stop_ids == ({1, 2} if name == "llama3" else {2, 0})
    prompts = [tok.start_ids + tok.encode(t) for t in ("The patient presents with", "Hello world, the quick", "A")]
    samples = Engine(model, tok).generate(prompts, SamplingParams(max_new_tokens=20, temperature=0.0))
    for prompt, [sample] in zip(prompts, samples):
        out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                          do_sample=False, max_new_tokens=20, eos_token_id=sorted(tok.stop_ids), pad_token_id=0)
        assert sample.tokens == out[0, len(prompt):].tolist()
        print(f"\n{name}: greedy {len(sample.tokens)} tokens ({sample.finish_reason}), identical to generate")


def test_tokenizer_roles_and_chat_template(family, tmp_path) -> None:
    """Our encoding of a prompt is transformers' (its start token included), and the chat
    template renders as transformers' apply_chat_template."""
    name, folder, _ = family
    tok = Tokenizer.load(folder)
    theirs = transformers.AutoTokenizer.from_pretrained(folder)
    text = "A 45-year-old man has chest pain; Question: which drug?"
    assert tok.start_ids + tok.encode(text) == theirs(text)["input_ids"]
    messages = [{"role": "user", "content": "Which drug?"}]
    special = {"bos_token": theirs.bos_token or "", "eos_token": theirs.eos_token}
    assert chat_prompt(messages, template=tok.chat_template, **special) == theirs.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)
    messages = [{"role": "system", "content": "Be brief."}, *messages, {"role": "assistant", "content": "B"},
                {"role": "user", "content": "Why <|im_end|> not?"}]  # a special token typed by the user stays one
    assert chat_ids(tok, messages) == list(theirs.apply_chat_template(messages, tokenize=True, return_dict=False,
                                                                      add_generation_prompt=True))


def test_import_then_export_gives_back_the_source(family, tmp_path) -> None:
    name, folder, hf = family
    ckpt = import_checkpoint(str(folder), tmp_path / "ckpt")
    assert "imported" in (ckpt / "README.md").read_text() and str(folder) in (ckpt / "README.md").read_text()
    out = export_hf(ckpt, tmp_path / "hf")
    source, back = load_file(str(folder / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert source.keys() == back.keys()
    for key in source:
        assert torch.equal(source[key], back[key]), key
    exported = json.loads((out / "config.json").read_text())
    assert exported["architectures"] == hf.config.architectures
    reloaded = transformers.AutoConfig.from_pretrained(out)
    for field in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "vocab_size", "rms_norm_eps", "tie_word_embeddings",
                  "max_position_embeddings"):
        assert getattr(reloaded, field) == getattr(hf.config, field), field

    def head_dim(c) -> int:  # Qwen2Config has no head_dim field: hidden / heads
        return getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads

    assert head_dim(reloaded) == head_dim(hf.config)
    assert reloaded.rope_parameters == hf.config.rope_parameters
    text = "A 45-year-old man has chest pain"  # the exported tokenizer encodes as the source's: one bos or none
    assert (transformers.AutoTokenizer.from_pretrained(out)(text)["input_ids"]
            == transformers.AutoTokenizer.from_pretrained(folder)(text)["input_ids"])
    twin = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    ids = torch.randint(0, 300, (1, 9))
    with torch.no_grad():
        assert torch.equal(twin(ids).logits, hf(ids).logits)


def test_evaluate_runs_on_an_imported_checkpoint(family, tmp_path) -> None:
    _, folder, _ = family
    ckpt = import_checkpoint(str(folder), tmp_path / "ckpt")
    [report] = evaluate(str(ckpt), "synthetic", "test", modes=("loglikelihood",), limit=4, first=True,
                        progress=False, device="cpu")
    assert report["n"] == 4 and 0 <= report["accuracy"] <= 1


def _refused(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("change, message", [
    ({"architectures": ["MistralForCausalLM"]}, "architecture ['MistralForCausalLM'] is not supported"),
    ({"use_sliding_window": True, "sliding_window": 32}, "sliding-window attention"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6}}, "rope_type 'yarn'"),
    ({"attention_bias": True}, "attention_bias true"),
])
@pytest.mark.parametrize("family", ["qwen3"], indirect=True)  # one family is enough for the config checks
def test_refusals_are_one_line(family, change: dict, message: str, tmp_path, capsys) -> None:
    name, folder, _ = family
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in folder.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, **change}))
    assert message in _refused(["import", str(bad), "--out", str(tmp_path / "out")], capsys)
    assert not (tmp_path / "out").exists()


def test_hub_name_offline_fails_fast(monkeypatch, tmp_path, capsys) -> None:
    from pure_transformer.data import registry

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)  # the network is what is absent, not the code under test
    registry.hub_lookup_error.cache_clear()
    try:
        err = _refused(["import", "Qwen/Qwen2.5-0.5B", "--out", str(tmp_path / "out")], capsys)
    finally:
        registry.hub_lookup_error.cache_clear()
    assert "cannot download 'Qwen/Qwen2.5-0.5B' from the Hugging Face Hub" in err


def test_a_sharded_bf16_folder_loads_in_bf16(family, tmp_path) -> None:
    """A sharded ``model.safetensors.index.json`` folder loads, every tensor in place; bf16 weights
    stay bf16 (held once, no fp32 copy)."""
    name, folder, hf = family
    sharded = tmp_path / "sharded"
    copy.deepcopy(hf).to(torch.bfloat16).save_pretrained(sharded, max_shard_size="40KB")
    assert (sharded / "model.safetensors.index.json").is_file() and not (sharded / "model.safetensors").exists()
    ours = load_hf_model(sharded)
    assert {p.dtype for p in ours.parameters()} == {torch.bfloat16}
    bf16 = load_hf_model(folder).to(torch.bfloat16)
    for (n, a), b in zip(ours.state_dict().items(), bf16.state_dict().values()):
        assert torch.equal(a, b), n


def test_our_own_tokenizer_keeps_end_of_text_for_every_role(tiny_tokenizer, tmp_path) -> None:
    """Our tokenizer, from a checkpoint's lone tokenizer.json or from its trained folder (with the
    tokenizer_config.json transformers needs), starts, stops and pads exactly as before roles existed."""
    folder = tiny_tokenizer.save(tmp_path / "tok")
    for tok in (Tokenizer.load(folder), Tokenizer.load(folder / "tokenizer.json")):
        assert tok.start_ids == [tok.eot_id] and tok.stop_ids == {tok.eot_id} and tok.separator_id == tok.eot_id
        assert (tok.eot_id, tok.pad_id) == (tiny_tokenizer.eot_id, tiny_tokenizer.pad_id)
        assert tok.files().keys() <= {"tokenizer.json", "tokenizer_config.json"} and tok.chat_template is None


@pytest.mark.parametrize("family", ["llama3"], indirect=True)
def test_import_command_then_generate(family, tmp_path, capsys) -> None:
    name, folder, _ = family
    assert main(["import", str(folder), "--out", str(tmp_path / "ckpt")]) == 0
    assert f"imported from {folder}" in capsys.readouterr().out
    assert main(["generate", "--checkpoint", str(tmp_path / "ckpt"), "--prompt", "The patient", "--temperature", "0",
                 "--max-new-tokens", "4", "--device", "cpu"]) == 0
    assert main(["import", str(folder), "--out", str(tmp_path / "ckpt")]) == 2  # never over a checkpoint
    assert "already exists and is not empty" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["qwen2"], indirect=True)
def test_served_chat_uses_the_models_template(family, tmp_path) -> None:
    """/v1/chat/completions on an imported model: its own template (special tokens as tokens), greedy,
    ending at its stop ids; the reply is transformers' greedy continuation of apply_chat_template."""
    name, folder, hf = family
    from fastapi.testclient import TestClient

    from pure_transformer.serving.app import create_app

    model, tok, _, _ = load_model(import_checkpoint(str(folder), tmp_path / "ckpt"))
    messages = [{"role": "user", "content": "Which drug?"}]
    ids = transformers.AutoTokenizer.from_pretrained(folder).apply_chat_template(
        messages, tokenize=True, return_dict=False, add_generation_prompt=True)
    out = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), do_sample=False,
                      max_new_tokens=6, eos_token_id=sorted(tok.stop_ids), pad_token_id=0)[0, len(ids):].tolist()
    expected = tok.decode([t for t in out if t not in tok.stop_ids])
    with TestClient(create_app(model, tok, model_name=name)) as client:
        reply = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 6, "temperature": 0})
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["prompt_tokens"] == len(ids)
    assert reply.json()["choices"][0]["message"]["content"] == expected
    print(f"\n{name}: chat reply {expected!r} from {out}")


@pytest.mark.parametrize("family", ["qwen2"], indirect=True)
def test_a_gpt2_style_bos_is_not_added_to_an_imported_prompt(family, tmp_path) -> None:
    """SmolLM2 and GPT-2 name bos = eos = <|endoftext|> and transformers adds neither to a prompt:
    nor does an import (our own tokenizer folders, with the same names, start with it), and the
    checkpoint says so explicitly."""
    name, folder, _ = family
    smol = tmp_path / "smol"
    smol.mkdir()
    (smol / "tokenizer.json").write_bytes((folder / "tokenizer.json").read_bytes())
    (smol / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}))
    assert Tokenizer.load(smol, imported=True).start_ids == []
    assert transformers.AutoTokenizer.from_pretrained(smol)("a")["input_ids"][:1] != [0]
    assert Tokenizer.load(smol).start_ids == [0]  # read as one of ours
    saved = json.loads(Tokenizer.load(smol, imported=True).files()["tokenizer_config.json"])
    assert saved["add_bos_token"] is False


def test_import_rl_evaluate_export_end_to_end(family, tmp_path, write_jsonl) -> None:
    """import -> rl -> evaluate -> export: two GRPO steps start from an imported checkpoint (its tokenizer's
    roles, its shape) and change its weights (the reward varies within a group, so every group has an
    advantage); the result is evaluated and exported, and transformers computes our logits from it."""
    from dataclasses import replace

    from pure_transformer.config.rl import grpo_preset
    from pure_transformer.data.ledger import read_ledger
    from pure_transformer.rl.train import grpo_train

    _, folder, _ = family
    ckpt = import_checkpoint(str(folder), tmp_path / "ckpt")
    rows = [{"question": f"Which number is {i}?", "options": {k: str(i + j) for j, k in enumerate("ABCD")},
             "answer": "A"} for i in range(24)]
    train, val = write_jsonl(tmp_path / "q_train.jsonl", rows[:16]), write_jsonl(tmp_path / "q_val.jsonl", rows[16:])
    cfg = replace(grpo_preset("rl:debug"), max_steps=2, prompts_per_step=4, samples_per_prompt=4, micro_batch=16,
                  answer_format="letter", max_new_tokens=8, val_questions=4, val_every=1, ckpt_every=1,
                  warmup_steps=0, lr=1e-3, embedding_lr=1e-3)
    grpo_train(cfg, ckpt, tmp_path / "rl", data_path=str(train), val_data_path=str(val), progress=False,
               device="cpu", reward_fn=lambda q, text: float(len(text) % 2))
    before, _, _, _ = load_model(ckpt)
    after, tok, meta, final = load_model(tmp_path / "rl")
    assert meta["kind"] == "rl" and meta["step"] == 2 and tok.stop_ids == load_model(ckpt)[1].stop_ids
    moved = [name for name, p in after.state_dict().items() if not torch.equal(p, before.state_dict()[name])]
    assert moved and "lm_head.weight" in moved
    # The ledger says what it cannot see (the open model's own reading), then what GRPO trained on.
    assert [(e.phase, len(e.fingerprints)) for e in read_ledger(final).entries] == [("import", 0), ("rl", 16)]
    # ... and the chain goes on: evaluate says so, and export gives transformers the same model back.
    [report] = evaluate(str(final), "synthetic", "test", modes=("loglikelihood",), limit=4, first=True,
                        progress=False, device="cpu")
    assert report["n"] == 4 and report["contamination"]["unseen"] == [str(folder)]
    twin = transformers.AutoModelForCausalLM.from_pretrained(export_hf(final, tmp_path / "hf"),
                                                             attn_implementation="eager").eval()
    ids = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(twin(ids).logits, after(ids)[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["llama3"], indirect=True)
def test_continued_pretraining_of_an_imported_model_lowers_its_medical_loss(family, tmp_path) -> None:
    """``--init-from`` an imported checkpoint: the bundled medical text packed with the model's own
    tokenizer, and the validation loss on it falls from the imported weights' loss."""
    from pure_transformer.config.overrides import apply_overrides
    from pure_transformer.config.pretrain import pretrain_preset
    from pure_transformer.train.logger import read_metrics
    from pure_transformer.train.pretrain import pretrain

    _, folder, _ = family
    ckpt = import_checkpoint(str(folder), tmp_path / "ckpt")
    cfg = apply_overrides(pretrain_preset("pretrain:debug"), dict(
        init_from=str(ckpt), sources={"bundled-medical": 1.0}, seq_len=64, micro_batch=4, global_batch_tokens=256,
        total_tokens=256 * 30, warmup_tokens=256 * 2, peak_lr=3e-3, min_lr=3e-4, log_every=1, val_every=15,
        val_tokens=2048, val_mcq=0, ckpt_every=15, deterministic=True, shuffle_buffer=64))
    pretrain(cfg, tmp_path / "run", progress=False, device="cpu")
    val = [r["val_loss"] for r in read_metrics(tmp_path / "run" / "logs" / "metrics.jsonl") if "val_loss" in r]
    assert len(val) == 3 and val[-1] < 0.8 * val[0], val
    model, tok, _, _ = load_model(tmp_path / "run")
    assert tok.start_ids == load_model(ckpt)[1].start_ids  # Llama-3's <|begin_of_text|>, kept


@pytest.mark.parametrize("preset, published", [("smollm2-360m", 361_821_120), ("qwen2.5-0.5b", 494_032_768),
                                               ("qwen3-0.6b", 596_049_920), ("llama3.2-1b", 1_235_814_400)])
def test_open_model_presets_have_the_real_shapes(preset: str, published: int) -> None:
    """Each open-model preset, written as its transformers config and built by transformers itself (on the
    meta device), has the model's published parameter count, and reads back as the same preset."""
    from pure_transformer.model.config import model_preset
    from pure_transformer.model.hf import config_from_hf, hf_config
    from pure_transformer.model.transformer import Transformer

    cfg = model_preset(preset)
    fields = hf_config(cfg)
    hf_cfg = transformers.AutoConfig.for_model(fields["model_type"], **{k: v for k, v in fields.items()
                                                                       if k != "model_type"})
    with torch.device("meta"):
        theirs = transformers.AutoModelForCausalLM.from_config(hf_cfg)
        ours = Transformer(cfg)
    assert theirs.num_parameters() == ours.num_params() == published
    assert config_from_hf(fields) == cfg


@pytest.mark.parametrize("family", ["qwen2"], indirect=True)
def test_evaluate_and_the_card_say_the_ledger_cannot_see_the_open_models_reading(family, tmp_path, capsys) -> None:
    _, folder, _ = family
    ckpt = import_checkpoint(str(folder), tmp_path / "ckpt")
    assert main(["evaluate", "--checkpoint", str(ckpt), "--mode", "loglikelihood", "--first", "2",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"note: the model descends from {folder}, whose own pretraining data no ledger records" in err
    card = (export_hf(ckpt, tmp_path / "hf") / "README.md").read_text()
    assert f"It descends from {folder}, an open model whose own pretraining data no ledger records" in card
