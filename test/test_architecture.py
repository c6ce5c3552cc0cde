"""The package structure docs/architecture.md describes, checked from the source (no imports run).

Every ``import`` statement counts — module level, inside functions and under ``TYPE_CHECKING`` —
because a lazy import in a circle is still a circle: it only moves the failure to run time.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("pruning_tools", "sparse_perception")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for root in ROOTS for p in sorted((REPO / root).rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules ``path`` imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # ``import a.b.c`` of a non-module attribute: the longest module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(path, name, known) for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _unit(module: str) -> str:
    """The package a module belongs to for the layer check: ``pruning_tools.search.env`` ->
    ``pruning_tools.search``; top-level modules (``pruning_tools.cli``) are their own unit."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_in_a_circle() -> None:
    graph = _graph()
    assert len(graph) > 40, sorted(graph)  # the walk found the packages
    assert _cycles(graph) == []


def test_packages_form_layers() -> None:
    """No circle between packages either: e.g. ``search`` may use ``surgery``, never the reverse."""
    packages: dict[str, set[str]] = defaultdict(set)
    for mod, deps in _graph().items():
        for d in deps:
            if _unit(d) != _unit(mod):
                packages[_unit(mod)].add(_unit(d))
    assert _cycles(dict(packages)) == []


@pytest.mark.parametrize("root", ROOTS)
def test_every_package_says_its_job(root: str) -> None:
    for init in sorted((REPO / root).rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.relative_to(REPO)} has no docstring saying its job"
        job = doc.split("\n\n")[0].splitlines()
        assert len(job) <= 2, f"{init.relative_to(REPO)}: the job takes {len(job)} lines, not two"


def test_only_the_adapter_imports_ultralytics() -> None:
    users = []
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                if any(n == "ultralytics" or n.startswith("ultralytics.") for n in names):
                    users.append(str(path.relative_to(REPO)))
    assert sorted(set(users)) == ["pruning_tools/ultralytics_adapter.py"]


# the public surface the restructuring must not change: command names, console scripts, their targets
PRUNING_COMMANDS = ("kitti", "train-baseline", "import-model", "evaluate", "prune", "export", "train-policy", "federated",
                    "federated-groups", "demo")
ONLINE_COMMANDS = ("replay", "record", "node")
CONSOLE_SCRIPTS = ("pruning-tools", "sparse-perception", "detector_node", "replay", "recorder")


def test_every_cli_command_resolves_to_a_main() -> None:
    import importlib

    from pruning_tools.cli import COMMANDS as OFFLINE
    from sparse_perception.cli import COMMANDS as ONLINE

    assert tuple(OFFLINE) == PRUNING_COMMANDS and tuple(ONLINE) == ONLINE_COMMANDS
    for module, _ in (*OFFLINE.values(), *ONLINE.values()):
        assert callable(importlib.import_module(module).main), module


def test_console_scripts_keep_their_names_and_resolve() -> None:
    import importlib
    import re

    text = (REPO / "setup.py").read_text()
    entries = dict(re.findall(r'"([\w-]+) = ([\w.]+:\w+)"', text))
    assert tuple(entries) == CONSOLE_SCRIPTS
    for target in entries.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), target


@pytest.mark.parametrize("command", PRUNING_COMMANDS)
def test_pruning_tools_help_of_every_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from pruning_tools.cli import main

    try:
        code = main([command, "--help"])
    except SystemExit as exc:  # argparse's --help
        code = exc.code
    assert code == 0
    assert f"pruning-tools {command}" in capsys.readouterr().out
