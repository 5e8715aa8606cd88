"""The README's Python snippets run as written (in order, in one namespace, as a reader would
paste them), with training shortened; the flat API exports every name they import from it."""

from __future__ import annotations

import ast
import re
import sys
import types
from pathlib import Path

import pytest

import sae_theory
from sae_theory.models.registry import registered_saes, unregister_sae

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

#: Shortened for the test: every `steps=N` of a TrainConfig, the 5M-row stream, and the activation
#: extraction (200,000 MiniLM tokens took 405 s of one core cold at a load of 2; 20,000 hold the
#: snippet's 4,096 held-out tokens).
SHORTEN = [(re.compile(r"\bsteps=[\d_]+"), "steps=20"), (re.compile(r"stream\(5_000_000"), "stream(100_000"),
           (re.compile(r"\bmax_tokens=[\d_]+"), "max_tokens=20_000")]


def snippets() -> list[str]:
    blocks = BLOCK.findall(README.read_text())
    assert blocks, f"no ```python blocks in {README}"
    return blocks


def test_readme__flat_imports_are_in_the_flat_api():
    names = set()
    for block in snippets():
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and node.module == "sae_theory":
                names.update(alias.name for alias in node.names)
    assert names, "the README imports nothing from the flat API"
    assert sorted(names - set(sae_theory.__all__)) == []


@pytest.mark.slow
def test_readme__snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = {e.name for e in registered_saes()}
    module = types.ModuleType("readme_snippets")  # dataclasses look their class's module up in sys.modules
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    try:
        for i, block in enumerate(snippets()):
            code = block
            for pattern, repl in SHORTEN:
                code = pattern.sub(repl, code)
            try:
                exec(compile(code, f"README.md block {i + 1}", "exec"), namespace)
            except Exception as exc:
                raise AssertionError(f"README.md python block {i + 1} fails: {type(exc).__name__}: {exc}\n{block}") from exc
    finally:
        for name in {e.name for e in registered_saes()} - before:
            unregister_sae(name)
