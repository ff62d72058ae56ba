"""The OpenAI-compatible HTTP server: the app, its request schemas, the model thread and the web page."""
