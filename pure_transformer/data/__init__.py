"""Data pipeline: sources -> mixture -> packing -> loader, and the contamination guard."""
