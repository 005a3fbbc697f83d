"""Torch-free code both processes run (the API and the webhook worker in the API image, the model
worker in its own): what is neither the wire contract (`schemas/`, pure pydantic) nor one side's own.
It imports only `common` and `schemas` (tests/unit/test_layers.py)."""
