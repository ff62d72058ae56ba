"""Training loops and their parts: LR schedule, metrics logging."""
