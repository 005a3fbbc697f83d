"""The import graph keeps the architecture (docs/architecture.md, "Layering"): read from the source with
`ast`, every import statement counted, those inside functions included (a lazy import is still an arrow).

- `schemas/` is the wire contract: it imports nothing of ours but `schemas`.
- `common/` (torch-free code both processes share) imports `common` and `schemas`.
- `service/` (the API) and `delivery/` never import `workers`, and nothing they reach imports torch or
  transformers.
- `workers/` imports `workers`, `schemas` and `common`, never `service`.
- A method module (`workers/methods/<kind>.py`) is a leaf: it never imports another method.
- No import cycles among our modules.

`test_the_api_loads_no_torch_transformers_or_workers` checks the same boundary at run time (third-party
packages the static graph does not follow included).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "common", "service", "delivery", "workers", "lantern")
ALLOWED = {  # package -> the packages of ours it may import
    "schemas": {"schemas"},
    "common": {"common", "schemas"},
    "service": {"service", "schemas", "common"},
    "delivery": {"delivery", "schemas", "common"},
    "workers": {"workers", "schemas", "common", "delivery"},  # the model worker runs the reaper
    "lantern": {"lantern", "service", "schemas", "common"},  # the client package re-exports service.client
}
TORCH_FREE = ("schemas", "common", "service", "delivery", "lantern")
HEAVY = {"torch", "transformers"}
METHODS = "workers.methods"


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")) if (ROOT / package).is_dir() else ():
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(module: str, path: Path) -> list[tuple[str, bool]]:
    """(dotted name, runtime) for every import in the file; runtime is False under `if TYPE_CHECKING:`."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, runtime: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, runtime)
            return
        if isinstance(node, ast.Import):
            out.extend((a.name, runtime) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from a.b import c`: c may be a submodule (an arrow to a.b.c) or a name in a.b
            out.extend((f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base, runtime) for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child, runtime)

    visit(ast.parse(path.read_text(), str(path)), True)
    return out


def _resolve(name: str) -> str | None:
    """The module of ours an import names (the longest existing prefix), or None for a third party."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in MODULES:
            return ".".join(parts)
        parts.pop()
    return None


def _executed(module: str, target: str) -> set[str]:
    """What importing `target` from `module` runs: the target and the packages above it that are not
    above `module` (those are already in `sys.modules` while `module` runs). `from workers.perturbation.batched
    import X` in `workers.patching.path` runs `workers/patching/__init__.py` too."""
    mine = module.split(".")
    parts = target.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)
            if parts[:i] != mine[:i] and ".".join(parts[:i]) in MODULES} - {module}


def _graph(runtime_only: bool) -> dict[str, set[str]]:
    return {m: {e for n, rt in names if (rt or not runtime_only) and (t := _resolve(n)) for e in _executed(m, t)}
            for m, names in IMPORTS.items()}


IMPORTS = {m: _imported(m, p) for m, p in MODULES.items()}
GRAPH = _graph(runtime_only=False)
RUNTIME_GRAPH = _graph(runtime_only=True)


def _top(module: str) -> str:
    return module.split(".")[0]


def test_the_module_list_is_read():
    assert {"schemas.jobs", "service.main", "workers.tasks", "workers.registry"} <= MODULES.keys()
    assert "workers.registry" in GRAPH["workers.tasks"] and "schemas.jobs" in GRAPH["workers.registry"]


def test_each_package_imports_only_the_packages_below_it():
    upward = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets
                    if _top(t) not in ALLOWED[_top(m)])
    assert upward == []


def test_the_torch_free_packages_reach_no_torch_transformers_or_workers():
    """Transitively: whatever an API-side module reaches through our imports imports no heavy library."""
    bad = []
    for start in (m for m in MODULES if _top(m) in TORCH_FREE):
        seen, todo = {start}, [start]
        while todo:
            for t in GRAPH[todo.pop()] - seen:
                seen.add(t)
                todo.append(t)
        bad += [f"{start} reaches {m}" for m in sorted(seen) if _top(m) == "workers"]
        bad += [f"{start} reaches {m}, which imports {n}" for m in sorted(seen) for n, _ in IMPORTS[m]
                if n.split(".")[0] in HEAVY]
    assert bad == []


# Inside workers/, from the top down (docs/architecture.md): an import may point at its own tier or
# a lower one, never up. A new helper package (workers/<topic>/) sits in the "helpers" tier.
WORKER_TIERS = {
    "process": ("workers.main", "workers.tasks", "workers.registry", "workers.install_check"),
    "methods": ("workers.methods",),
    "helpers": (),  # every other workers.<package>: patching, perturbation, knowledge, datasets, ...
    "internals": ("workers.internals", "workers.interventions", "workers.numerics"),
    "base": ("workers.models", "workers.context", "workers.progress", "workers.errors", "workers.finite",
             "workers.metrics", "workers"),
}
RANK = {tier: rank for rank, tier in enumerate(WORKER_TIERS)}


def _tier(module: str) -> str:
    best = ("helpers", 0)
    for tier, prefixes in WORKER_TIERS.items():
        for p in prefixes:
            if (module == p or (p != "workers" and module.startswith(p + "."))) and len(p) > best[1]:
                best = (tier, len(p))
    return best[0]


def test_worker_modules_import_only_their_tier_or_below():
    upward = sorted(f"{m} ({_tier(m)}) -> {t} ({_tier(t)})" for m, targets in GRAPH.items() if _top(m) == "workers"
                    for t in targets if _top(t) == "workers" and RANK[_tier(t)] < RANK[_tier(m)])
    assert upward == []


def test_the_tier_check_sees_an_upward_arrow():
    assert _tier("workers.internals.hooks") == "internals" and _tier("workers.patching.exact") == "helpers"
    assert RANK[_tier("workers.methods.attention")] < RANK[_tier("workers.internals.capture")]


def test_method_modules_are_leaves():
    """A method imports helpers, never another method: what two kinds share lives below `workers/methods/`."""
    arrows = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() if m.startswith(METHODS + ".")
                    for t in targets if t.startswith(METHODS + "."))
    assert arrows == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    """Run-time imports only: an import under `if TYPE_CHECKING:` executes nothing."""
    assert _cycles(RUNTIME_GRAPH) == []


def test_the_api_loads_no_torch_transformers_or_workers():
    code = ("import sys, service.main, service.cli, schemas.jobs, lantern.client; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'workers')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
