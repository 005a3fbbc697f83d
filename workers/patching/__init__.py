"""Activation patching: where components live (`sites`), exact batched patching (`exact`), attribution patching (`attribution`)."""
