"""Imports point one way: core (gateway) < auth < front-ends (protocols) < assembly (flowgate).

The test reads every module's AST (imports at any depth, ``if TYPE_CHECKING:``
blocks included: a type-only back-reference is still a loop) and fails on an
import from a lower package to a higher one, on any cycle between modules and
on any cycle between packages. ``gateway`` never imports ``auth``: the core reads
a verified token through ``gateway.principal``'s protocols, which
``auth.tokens.Claims`` satisfies. ``auth`` uses only gateway's base modules
(``AUTH_USES``), not the hub, publishing or queues built on them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"gateway": 0, "auth": 1, "protocols": 2, "flowgate": 3}
AUTH_USES = ("gateway.errors", "gateway.topics", "gateway.settings", "gateway.bus")
# Imports allowed against the order for now: (importing module, imported package or module).
EXCEPTIONS: set[tuple[str, str]] = set()

Graph = dict[str, set[str]]


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path, packages: list[str]) -> Graph:
    """Module -> the modules of ``packages`` it imports (a name from a package resolves to its submodule)."""
    files = {module_name(root, p): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}
    graph: Graph = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in files else base)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def excepted(src: str, dst: str) -> bool:
    return any(src == s and (dst == d or dst.startswith(d + ".")) for s, d in EXCEPTIONS)


def package_graph(graph: Graph) -> Graph:
    """Package -> the other packages its modules import (the top-level name of each module)."""
    packages: Graph = {src.split(".")[0]: set() for src in graph}
    for src, targets in graph.items():
        top = src.split(".")[0]
        packages[top].update(t.split(".")[0] for t in targets if not excepted(src, t))
        packages[top].discard(top)
    return packages


def layer_violations(graph: Graph) -> list[str]:
    found = []
    for src, targets in graph.items():
        for dst in sorted(targets):
            top_src, top_dst = src.split(".")[0], dst.split(".")[0]
            if excepted(src, dst):
                continue
            if LAYERS.get(top_dst, -1) > LAYERS.get(top_src, -1):
                found.append(f"{src} -> {dst} (points up)")
            elif top_src == "auth" and top_dst == "gateway" and not dst.startswith(AUTH_USES):
                found.append(f"{src} -> {dst} (auth uses only {', '.join(AUTH_USES)})")
    return sorted(found)


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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


def test_imports_point_down() -> None:
    graph = import_graph(ROOT, list(LAYERS))
    assert len(graph) > 100  # the walk saw the tree
    assert any(t.startswith("protocols.") for t in graph["flowgate.app"])
    assert layer_violations(graph) == []


def test_no_import_cycle_between_modules() -> None:
    assert cycles(import_graph(ROOT, list(LAYERS))) == []


def test_packages_form_a_dag_in_the_layer_order() -> None:
    packages = package_graph(import_graph(ROOT, list(LAYERS)))
    assert cycles(packages) == []
    assert packages["gateway"] == set()
    assert packages["auth"] == {"gateway"}
    for src, targets in packages.items():
        assert all(LAYERS[dst] < LAYERS[src] for dst in targets), (src, targets)


def write_tree(root: Path, files: dict[str, str]) -> Graph:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return import_graph(root, list(LAYERS))


def test_the_checks_fail_on_a_loop_and_an_upward_import(tmp_path: Path) -> None:
    graph = write_tree(
        tmp_path,
        {
            "gateway/__init__.py": "",
            "gateway/hub.py": "from gateway import outbox\n",
            "gateway/outbox.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gateway.hub import Hub\n",
            "gateway/errors.py": "import auth.tokens\n",
            "auth/__init__.py": "",
            "auth/tokens.py": "from gateway.errors import X\nfrom gateway.hub import Hub\n",
            "protocols/__init__.py": "",
            "protocols/ws.py": "from . import http\n",
            "protocols/http.py": "from flowgate.app import create_app\n",
            "flowgate/__init__.py": "",
            "flowgate/app.py": "from protocols import ws\n",
        },
    )
    assert graph["protocols.ws"] == {"protocols.http"}
    assert sorted(map(tuple, cycles(graph))) == [
        ("auth.tokens", "gateway.errors"),
        ("flowgate.app", "protocols.http", "protocols.ws"),
        ("gateway.hub", "gateway.outbox"),
    ]
    assert layer_violations(graph) == [
        "auth.tokens -> gateway.hub (auth uses only gateway.errors, gateway.topics, gateway.settings, gateway.bus)",
        "gateway.errors -> auth.tokens (points up)",
        "protocols.http -> flowgate.app (points up)",
    ]


def test_a_loop_between_packages_fails_without_a_loop_between_modules(tmp_path: Path) -> None:
    graph = write_tree(
        tmp_path,
        {
            "gateway/__init__.py": "",
            "gateway/topics.py": "",
            "gateway/feeds.py": "from auth.permissions import Rule\n",
            "auth/__init__.py": "",
            "auth/permissions.py": "from gateway.topics import topic_matches\n",
            "auth/tokens.py": "from auth.permissions import Rule\n",
            "protocols/__init__.py": "",
            "flowgate/__init__.py": "",
        },
    )
    assert cycles(graph) == []
    assert cycles(package_graph(graph)) == [["auth", "gateway"]]
    assert layer_violations(graph) == ["gateway.feeds -> auth.permissions (points up)"]
    del graph["gateway.feeds"]
    assert cycles(package_graph(graph)) == []
    assert layer_violations(graph) == []
