"""Using a trained model: the generate command, the OpenAI-compatible HTTP app, its request schemas, the batching worker and the web page."""
