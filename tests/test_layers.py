"""The package layout is the architecture: a module imports only from its own
layer or a lower one, the Dareplane toolkit stands alone, and there are no
import cycles. Read from the source (every ``import``, also inside functions),
so a lazy import cannot hide a violation."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap

from helpers import ROOT

PKG = ROOT / "dpshm"
# lowest first; a module may import its own layer and the ones before it
LAYERS = ["base", "dareplane", "shm", "control", "viewer", "bench", "cli"]
ENTRY = {"dpshm.__main__"}  # `python -m dpshm`: the command line, above every layer


def _module_name(path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> str:
    if module in ENTRY:
        return "cli"
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return "base"


def _imports() -> dict[str, set[str]]:
    """module -> the dpshm modules it imports (absolute names)."""
    found: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        mod = _module_name(path)
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("dpshm")}
            elif isinstance(node, ast.ImportFrom) and node.module:
                base = node.module
                if node.level:  # relative import
                    pkg = (
                        mod.split(".")[: -node.level]
                        if path.name != "__init__.py"
                        else (mod.split(".")[: len(mod.split(".")) - node.level + 1])
                    )
                    base = ".".join([*pkg, node.module])
                if base.startswith("dpshm"):
                    deps.add(base)
                    # `from dpshm.shm import registry` imports the submodule too
                    deps |= {f"{base}.{a.name}" for a in node.names}
        found[mod] = deps
    known = set(found)
    return {m: {d for d in deps if d in known and d != m} for m, deps in found.items()}


def test_every_module_is_in_a_layer() -> None:
    mods = _imports()
    folders = {m.split(".")[1] for m in mods if m.count(".") >= 2}
    assert folders <= set(LAYERS), f"folders without a layer: {folders - set(LAYERS)}"


def test_no_module_imports_a_higher_layer() -> None:
    bad = []
    for mod, deps in _imports().items():
        mine = LAYERS.index(_layer(mod))
        for dep in deps:
            if dep == "dpshm":  # the package's own __init__: the public API, lazy
                continue
            if LAYERS.index(_layer(dep)) > mine:
                bad.append(f"{mod} ({_layer(mod)}) imports {dep} ({_layer(dep)})")
    assert not bad, "imports of a higher layer:\n" + "\n".join(sorted(bad))


def test_no_import_cycles() -> None:
    graph = _imports()
    for mod in graph:  # the package __init__ only re-exports lazily: not an edge
        graph[mod].discard("dpshm")
    # packages' __init__ modules are entered on any submodule import: treat a
    # submodule import as an import of its package only when the package imports code
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append([*stack[stack.index(d) :], d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_toolkit_imports_no_zmq_shared_memory_or_supervisor() -> None:
    """Importing every module of dpshm.dareplane loads no ZeroMQ, no msgpack and
    nothing of dpshm.shm, dpshm.control or the CLI (checked in a fresh interpreter)."""
    code = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        import dpshm.dareplane as pkg
        for m in pkgutil.iter_modules(pkg.__path__, "dpshm.dareplane."):
            importlib.import_module(m.name)
        import dpshm
        for name in ("DefaultServer", "DefaultCallbackServer", "get_logger", "EventLoop",
                     "sleep_s", "RingBuffer", "LogRecordSocketReceiver"):
            getattr(dpshm, name)
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("zmq", "msgpack")
                     or m.startswith(("dpshm.shm", "dpshm.control", "dpshm.cli")))
        print(" ".join(bad))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    assert out == "", f"the Dareplane toolkit loaded: {out}"


def test_only_one_module_imports_each_third_party_library() -> None:
    """pylsl enters through dpshm.lsl only; zmq and msgpack through dpshm.shm.bus only;
    scipy through dpshm.dareplane.filterbank only."""
    owners = {
        "pylsl": {"dpshm.lsl"},
        "zmq": {"dpshm.shm.bus"},
        "msgpack": {"dpshm.shm.bus"},
        "scipy": {"dpshm.dareplane.filterbank"},
    }
    bad = []
    for path in PKG.rglob("*.py"):
        mod = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module.split(".")[0]]
            for n in names:
                if n in owners and mod not in owners[n] and not mod.startswith("dpshm.bench"):
                    bad.append(f"{mod} imports {n}")
    assert not bad, "\n".join(bad)
