"""Every number in a notebook's prose is set by the code or quoted with its source (issue 12,
point 6; issue 16, point 4).

Measured values reach the reader only through the notebooks' outputs (Markdown formatted from
variables, tables, prints), never through hand-written prose, so the prose cannot contradict what
was measured. The rule, per paragraph, bullet or table row of a markdown cell:

* a paragraph that names its source (the paper, a figure, table, section, theorem, proposition or
  algorithm, docs/papers.md, arXiv, the official or the authors' code, "et al.") may quote numbers;
* otherwise each number must be a setting: a number written in one of the notebook's code cells,
  or a value of a run profile (``quick`` or ``full``, every field, nested); or an integer up to
  10 (counts, section and notebook numbers, exponents);
* headings are exempt.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from sae_theory.profiles import get_profile

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NUMBER = re.compile(r"(?<![\w.^{/−-])\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?(?![\w}])")
SOURCE = re.compile(r"paper|Fig\b|Fig\.|Table|§|Thm|Theorem|Prop\.|docs/papers|arXiv|Alg|official|printed|reported|authors|et al|App\.",
                    re.IGNORECASE)


def _profile_values(obj, out: set[float]) -> set[float]:
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            _profile_values(getattr(obj, f.name), out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _profile_values(v, out)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out.add(float(obj))
    return out


PROFILE_VALUES = _profile_values(get_profile("quick", device="cpu"), set()) | _profile_values(get_profile("full", device="cpu"), set())


def code_numbers(cells) -> set[float]:
    """Every number written in the code cells (``15_000`` and ``15000`` alike)."""
    return {float(n.replace("_", "")) for c in cells if c["cell_type"] == "code"
            for n in re.findall(r"\d[\d_]*(?:\.\d+)?(?:e[-+]?\d+)?", "".join(c["source"]))}


def units(text: str) -> list[str]:
    """Paragraphs, bullets, numbered items, table rows and headings of a markdown cell."""
    out, cur = [], []
    for line in text.split("\n"):
        starts = not line.strip() or re.match(r"\s*([*-]|\d+\.|\|) ", line) or line.startswith("#")
        if starts:
            if cur:
                out.append(" ".join(cur))
            cur = [line] if line.strip() else []
        else:
            cur.append(line)
    if cur:
        out.append(" ".join(cur))
    return out


def unsourced_numbers(cells) -> list[str]:
    allowed = code_numbers(cells) | PROFILE_VALUES
    bad = []
    for i, c in enumerate(cells):
        if c["cell_type"] != "markdown":
            continue
        for unit in units("".join(c["source"])):
            if unit.startswith("#") or SOURCE.search(unit):
                continue
            for n in NUMBER.findall(unit):
                value = float(n.rstrip(",").replace(",", ""))
                if not ((value.is_integer() and value <= 10) or value in allowed):
                    bad.append(f"cell {i}: {n!r} in {unit[:120]!r}")
    return bad


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_numbers_in_prose_are_settings_or_quoted_with_their_source(path):
    cells = json.loads(path.read_text())["cells"]
    bad = unsourced_numbers(cells)
    assert not bad, ("numbers in prose that no code cell or profile sets and no source is named for (compute them in a "
                     "code cell and display them, or name the source):\n  " + "\n  ".join(bad))


def test_the_rule_flags_a_measured_number_and_passes_a_quoted_or_set_one():
    def md(text):
        return {"cell_type": "markdown", "source": [text]}

    code = {"cell_type": "code", "source": ["steps = 15_000\n"]}
    assert unsourced_numbers([md("GBA recovers 73.4% of the features here."), code])
    assert unsourced_numbers([md("The error falls to 0.123 after training."), code])
    assert not unsourced_numbers([md("The paper reports 73.4% (Fig 3)."), code])
    assert not unsourced_numbers([md("We train for 15,000 steps with 3 seeds."), code])
    assert not unsourced_numbers([md("## 12. Heading with 0.123"), code])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_structure__ids_a_parameters_cell_with_a_seed_and_a_last_line_saying_the_assertions_hold(path):
    """Issue 16, point 4: valid nbformat (every cell has an id), one ``parameters`` cell that sets
    ``SEED`` (papermill-style), and a last code cell that says all the notebook's assertions hold."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)  # raises on a cell without an id (nbformat 4.5)
    assert all("id" in c for c in json.loads(path.read_text())["cells"]), "every cell needs an id (nbformat 4.5)"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and re.search(r"^SEED = \d+", params[0].source, re.MULTILINE), "one parameters cell setting SEED"
    last = [c for c in nb.cells if c.cell_type == "code"][-1].source.strip().split("\n")[-1]
    number = path.stem[:2]
    assert last == f'print("all assertions of notebook {number} hold")', last
