"""YAML from users, loaded safely: the safe loader (no Python tags), nesting depth bounded, and the document's size
*after alias expansion* bounded, so a kilobyte "billion laughs" alias bomb or a deeply nested file is refused in
one line before anything expands it (the safe loader alone shares aliased nodes, and whatever walks the result
expands them: validation, hashing, JSON)."""
from __future__ import annotations

import yaml

from .errors import UserError

MAX_DEPTH = 64  # nesting levels; a suite needs about 6
MAX_NODES = 200_000  # scalars + collections once aliases are expanded; a large suite has a few thousand


class _Refused(Exception):
    pass


class _Loader(yaml.SafeLoader):
    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"is nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(root) -> int:
    """How many nodes the document has with every alias expanded (memoised: linear in the composed graph)."""
    sizes: dict[int, int] = {}
    stack = [(root, False)]
    active: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[key] = 1
            continue
        children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else node.value
        if done:
            active.discard(key)
            total = 1 + sum(sizes[id(c)] for c in children)
            sizes[key] = total
            if total > MAX_NODES:
                raise _Refused(f"expands to more than {MAX_NODES} values through its aliases (&anchor/*alias)")
            continue
        if key in active:
            raise _Refused("has an alias inside the node it names (a recursive alias)")
        active.add(key)
        stack.append((node, True))
        for c in children:
            if id(c) in active:
                raise _Refused("has an alias inside the node it names (a recursive alias)")
            if id(c) not in sizes:
                stack.append((c, False))
    return sizes[id(root)]


def load(text: str, where: str):
    """The one YAML document in `text` (None when empty); UserError naming `where` when it is refused."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    except _Refused as err:
        raise UserError(f"{where}: refused: the YAML {err}") from None
    except RecursionError:
        raise UserError(f"{where}: refused: the YAML is nested too deeply") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise UserError(f"{where}: malformed YAML{at}: {problem}") from None
    finally:
        loader.dispose()
