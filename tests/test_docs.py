"""The documentation stays true to the code.

docs/troubleshooting.md must cover every error a user can meet: each
``DpshmError`` subclass raised in ``dpshm/`` and the fixed text of each of its
messages, and every ``ERROR`` reply of the module server. The texts are taken
from the source code (AST), so a new or reworded message fails here until the
page says what it means.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import dpshm.errors

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TROUBLESHOOTING = DOCS / "troubleshooting.md"
MIN_FRAGMENT = 12  # shorter literal pieces ("ring ", "; ") say nothing


def _dpshm_errors() -> set[str]:
    """Names of DpshmError and its subclasses, in dpshm.errors and in any other module."""
    names = {
        name
        for name, obj in vars(dpshm.errors).items()
        if isinstance(obj, type) and issubclass(obj, dpshm.errors.DpshmError)
    }
    classes = [
        node
        for path in (ROOT / "dpshm").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
    ]
    grew = True
    while grew:
        new = {
            c.name
            for c in classes
            if any(isinstance(b, ast.Name) and b.id in names for b in c.bases)
        }
        grew = not new <= names
        names |= new
    return names


DPSHM_ERRORS = _dpshm_errors()


def _fragments(node: ast.AST) -> list[str]:
    """The literal pieces of a message expression (f-strings, '+' and .format())."""
    out = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            out.extend(p for p in re.split(r"\{[^}]*\}", sub.value))
    return [f.strip() for f in out if len(f.strip()) >= MIN_FRAGMENT]


def _module_constants(tree: ast.Module) -> dict[str, ast.AST]:
    return {
        t.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    }


def _raised_messages() -> list[tuple[str, str, str]]:
    """(location, error class, longest literal fragment) of every DpshmError constructed."""
    found = []
    for path in sorted((ROOT / "dpshm").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        consts = _module_constants(tree)
        for node in ast.walk(tree):  # every construction, raised at once or returned
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name not in DPSHM_ERRORS or not node.args:
                continue
            msg = node.args[0]
            # a message built from a module constant (e.g. a shared "fix" text)
            parts = [msg] + [
                consts[n.id] for n in ast.walk(msg) if isinstance(n, ast.Name) and n.id in consts
            ]
            frags = [f for p in parts for f in _fragments(p)]
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            found.append((where, name, max(frags, key=len) if frags else ""))
    return found


def _server_error_replies() -> list[tuple[str, str]]:
    """(location, longest literal fragment) of every ``self._error(conn, ...)`` text."""
    found = []
    for path in sorted((ROOT / "dpshm").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "_error"
                and len(node.args) == 2
            ):
                frags = _fragments(node.args[1])
                if frags:  # str(err) of a ProtocolError: covered by its raise site
                    found.append((f"{path.relative_to(ROOT)}:{node.lineno}", max(frags, key=len)))
    return found


def _doc_text() -> str:
    return TROUBLESHOOTING.read_text()


def test_the_scan_finds_the_errors_we_know() -> None:
    """Guards the scanner itself: if it finds nothing, the tests below prove nothing."""
    classes = {cls for _, cls, _ in _raised_messages()}
    assert {"RingNotFoundError", "RingSpaceError", "RingOwnershipError"} <= classes
    assert any("unknown PCOMM" in frag for _, frag in _server_error_replies())


@pytest.mark.parametrize(
    ("where", "cls", "fragment"), _raised_messages(), ids=lambda v: str(v)[:40]
)
def test_every_raised_error_is_in_troubleshooting(where: str, cls: str, fragment: str) -> None:
    text = _doc_text()
    assert re.search(rf"`(dpshm\.errors\.)?{cls}`|^### {cls}$", text, re.M), (
        f"{cls} (raised at {where}) has no entry in docs/troubleshooting.md"
    )
    assert fragment in text, (
        f"docs/troubleshooting.md does not quote the message raised at {where} "
        f"({cls}): {fragment!r}"
    )


@pytest.mark.parametrize(("where", "fragment"), _server_error_replies(), ids=lambda v: str(v)[:40])
def test_every_error_reply_is_in_troubleshooting(where: str, fragment: str) -> None:
    assert fragment in _doc_text(), (
        f"docs/troubleshooting.md does not list the ERROR reply sent at {where}: {fragment!r}"
    )


def test_every_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    assert pages, "no documentation pages found"
    missing = [p for p in pages if f": {p}" not in nav]
    assert not missing, f"pages missing from the nav of mkdocs.yml: {missing}"


# a commit hash: 7-40 hex digits with a digit and a letter, standing alone (stream keys in
# examples, like 'eeg.1a2b3c4d', are part of a longer word and not matched)
_HASH = re.compile(r"(?<![\w.'/-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}(?![\w.'/-])")
_ENGINEERING = ("/tmp script", "/tmp prototype", "the issue", "issue's")


@pytest.mark.parametrize("page", [*sorted(p.name for p in DOCS.glob("*.md")), "../README.md"])
def test_user_docs_have_no_engineering_notes(page: str) -> None:
    """User docs name no commit hashes, no issue and no throwaway scripts."""
    text = (DOCS / page).read_text()
    hashes = _HASH.findall(text)
    assert not hashes, f"{page} names commit hashes {hashes}: say what was measured instead"
    notes = [n for n in _ENGINEERING if n in text.lower()]
    assert not notes, f"{page} reads as an engineering note: {notes}"


def test_the_hash_check_finds_hashes() -> None:
    assert _HASH.findall("measured on commit 277a240 (and d8b645b).") == ["277a240", "d8b645b"]
    assert not _HASH.findall("key 'eeg.1a2b3c4d', 1000000 samples, deadbeef")
