"""The stateless HTTP API. Never imports torch, transformers or workers (a test proves it)."""
