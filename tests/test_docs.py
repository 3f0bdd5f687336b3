"""The plugin author guide documents every hook with its exact signature and every field; every hook has a test.

The site: every page is in mkdocs.yml's navigation, and every file the README links to exists (`mkdocs build
--strict` checks the links between pages, and their anchors).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import re
from pathlib import Path

import pytest

from zoo import Architecture, Dataset, Exporter, ModelCard, Recipe, Runtime, Weights, hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("register_"))


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook: str) -> None:
    signature = str(inspect.signature(getattr(hookspecs, hook))).replace("'", "")
    assert f"### `{hook}{signature}`" in (ROOT / "docs" / "plugins.md").read_text()


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test_that_implements_it(hook: str) -> None:
    sources = [p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_docs.py"]
    assert any(f"def {hook}(register" in s or f"specname='{hook}'" in s for s in sources)


@pytest.mark.parametrize("kind", [Architecture, Recipe, Dataset, Exporter, Runtime, Weights, ModelCard])
def test_every_field_is_on_the_site_with_its_type_default_and_meaning(kind: type) -> None:
    """mkdocstrings shows a dataclass field (type, default) only where it has a docstring: each one has, and the
    plugin guide (the API reference, for the card) renders the class."""
    tree = ast.parse(Path(inspect.getfile(kind)).read_text())
    (body,) = [node.body for node in tree.body if isinstance(node, ast.ClassDef) and node.name == kind.__name__]
    documented = {
        field.target.id
        for field, after in itertools.pairwise(body)
        if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
        and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
    }  # fmt: skip
    assert {f.name for f in dataclasses.fields(kind)} - documented == set()
    page = "api.md" if kind is ModelCard else "plugins.md"
    assert f"::: {kind.__module__}.{kind.__name__}\n" in (ROOT / "docs" / page).read_text()


def test_every_docs_page_is_in_the_site_navigation() -> None:
    nav = set(re.findall(r"^  - [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(), flags=re.MULTILINE))
    assert nav == {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}


def test_every_file_the_readme_links_to_exists() -> None:
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    local = [link for link in links if "://" not in link]
    assert any(link.startswith("docs/") for link in local)
    assert [link for link in local if not (ROOT / link).exists()] == []
