# Copyright (c) mmdms contributors. All rights reserved.
"""The package's import structure: no cycle between mmdms's modules, and the bottom layers
(``ops``, ``utils``) import nothing above them. Read from the source with ``ast`` (imports
inside functions included), so a cycle hidden behind a deferred import counts too."""
import ast
import os.path as osp
from pathlib import Path
from typing import Dict, Set

import mmdms

ROOT = Path(osp.dirname(mmdms.__file__))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def import_graph() -> Dict[str, Set[str]]:
    """Module -> the mmdms modules it imports (``from pkg import name`` also counts
    ``pkg.name`` where that is a module)."""
    files = {module_name(p): p for p in ROOT.rglob('*.py')}
    graph = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == '__init__.py' else name.rpartition('.')[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split('.')
                    base = base[:len(base) - node.level + 1]
                    source = '.'.join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ''
                targets = [source] + [f'{source}.{alias.name}' for alias in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in files and t != name)
    return graph


def cycles(graph: Dict[str, Set[str]]) -> list:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read():
    graph = import_graph()
    assert 'mmdms.models.layer_rules.base' in graph['mmdms.models.layer_rules.conv']
    assert 'mmdms.models.adapters.base' in graph['mmdms.structures.static_prune']


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_ops_and_utils_import_nothing_above_them():
    graph = import_graph()
    for name, imported in graph.items():
        for layer in ('mmdms.ops', 'mmdms.utils'):
            if name == layer or name.startswith(layer + '.'):
                above = {m for m in imported if not (m == layer or m.startswith(layer + '.'))}
                assert not above, f'{name} imports {sorted(above)}'
