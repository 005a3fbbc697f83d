"""Dependency syntax read from attention (the `syntactic_attention` kind): words to tokens, word-level
attention from subword attention, and attention read as a parse (Clark et al. 2019)."""
