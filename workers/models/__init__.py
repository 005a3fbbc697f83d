from workers.models.loading import LM, load_model

__all__ = ["LM", "load_model"]
