"""Data pipeline: sources -> mixture -> packing -> loader, plus MCQ helpers and the bundled offline data."""
