"""Evaluation: MCQ scoring (generate and log-likelihood modes), option-reading probes, the evaluate command."""
