"""Attention-head redundancy and importance: masks, distances, clustering (the head_redundancy kind)."""
