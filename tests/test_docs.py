"""The plugin author guide documents every hook with its exact signature, and every hook has a test."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from zoo import hookspecs

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
