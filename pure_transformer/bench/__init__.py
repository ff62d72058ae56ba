"""Benchmarks of the hot paths, each measured side by side in one process against
Hugging Face ``transformers.LlamaForCausalLM`` holding the same weights:

- ``pure-transformer bench train``: a pretraining step (tokens/s, MFU, peak memory,
  the share of the step spent waiting on data);
- ``pure-transformer bench generate``: batched decoding (tokens/s, time to first
  token) against ``generate`` with its dynamic and its static, compiled cache;
- ``pure-transformer bench rl-step``: one GRPO step split into generation,
  reference scoring, policy scoring, backward and the optimizer.

Timings alternate between the contenders (a, b, a, b, ...) so that load from
other processes hits both alike; every table states the machine and its load.
"""
