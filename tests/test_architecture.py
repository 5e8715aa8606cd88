"""Structure rules of the package: no module imports another module's private names, and the
argument checks go through one helper module."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sae_theory"


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_imports_another_modules_private_names():
    offences = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("sae_theory")):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    offences.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {private} from {'.' * node.level}{node.module or ''}")
    assert offences == []


def test_argument_checks_live_in_one_module():
    # a hand-written "isinstance(x, bool) or not isinstance(x, int)" check belongs in _checks.check_int
    offences = []
    for path in _modules():
        if path.name == "_checks.py":
            continue
        text = path.read_text()
        for lineno, line in enumerate(text.splitlines(), 1):
            if "isinstance(" in line and ", bool)" in line and "not isinstance(" in line and ", int)" in line:
                offences.append(f"{path.relative_to(PACKAGE.parent)}:{lineno}: {line.strip()}")
    assert offences == []
