"""Helpers behind :mod:`pure_transformer.serve` (HTTP plumbing and the model worker)."""
