"""Everything that imports torch and transformers: model loading, methods, the RQ worker."""

import os

# Set before anything imports transformers or tqdm (both read them at import time).
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from disk only, never a download
os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF loader draws an unconditional progress bar
