"""The bundled offline dataset: a clinical fact base, textbook passages, general prose and the synthetic MCQ set."""
