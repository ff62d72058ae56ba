"""Phase 2: GRPO fine-tuning on multiple-choice questions."""
