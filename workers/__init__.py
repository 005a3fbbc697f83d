"""Everything that imports torch and transformers: model loading, methods, the RQ worker."""
