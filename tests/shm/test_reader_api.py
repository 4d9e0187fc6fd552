"""Readers use the ring's public API only: SharedStreamView and the stream-following
code never touch a private name of another object (the ring's header words, its
arrays), so the ring can change its layout without breaking them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dpshm.shm.follow
import dpshm.shm.view


@pytest.mark.parametrize("module", [dpshm.shm.view, dpshm.shm.follow], ids=lambda m: m.__name__)
def test_readers_touch_no_private_names_of_other_objects(module):
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names if _private(a.name)]
            found += [f"line {node.lineno}: imports {name}" for name in names]
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id == "self"):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert not found, f"{module.__name__} uses private names: {found}"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")
