"""Datasets generated on the worker with the model's own tokenizer."""
