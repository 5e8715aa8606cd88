"""The papers' reference page, docs/papers.md: the package, the notebooks and the README cite it
(never the private digests ``gba.md`` / ``mp_sae.md``, which are not in the repository), and every
anchor they cite is a heading of the page."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "papers.md"

#: A citation of the page: ``docs/papers.md#<anchor>`` (also inside a markdown link).
CITATION = re.compile(r"docs/papers\.md#([\w-]+)")
#: A citation of a file outside the repository.
OUTSIDE = re.compile(r"(?<![\w-])(gba|mp_sae)\.md\b")
#: A link inside the page to one of its own headings.
INTERNAL_LINK = re.compile(r"\]\(#([\w-]+)\)")


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped except '-' and '_', every
    space turned into '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def page_anchors() -> set[str]:
    """Anchors of the page's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    anchors, seen = set(), Counter()
    in_code = False
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        m = re.match(r"#{1,6} (.+)$", line)
        if m and not in_code:
            base = github_anchor(m.group(1))
            anchors.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
            seen[base] += 1
    return anchors


def cited_files() -> list[Path]:
    """The files that must cite the page instead of the digests: the package, the tests (this
    file names the digests to forbid them), the notebooks and the README."""
    files = sorted((ROOT / "sae_theory").rglob("*.py")) + sorted((ROOT / "notebooks").glob("*.ipynb"))
    files += [p for p in sorted((ROOT / "tests").glob("*.py")) if p.name != Path(__file__).name]
    return files + [ROOT / "README.md"]


def repository_text_files() -> list[Path]:
    """Every .py, .ipynb and .md file of the checkout, outside hidden folders (.git, .venv, ...)
    and build metadata."""
    out = []
    for pattern in ("*.py", "*.ipynb", "*.md"):
        for path in ROOT.rglob(pattern):
            parts = path.relative_to(ROOT).parts
            if any(p.startswith(".") or p.endswith(".egg-info") or p == "__pycache__" for p in parts[:-1]):
                continue
            out.append(path)
    return sorted(out)


def test_github_anchor_rule():
    assert github_anchor("GBA recovery theorem") == "gba-recovery-theorem"
    assert github_anchor("MP-SAE Table 1") == "mp-sae-table-1"
    assert github_anchor("GBA §3 Algorithm 2 (bias adaptation)") == "gba-3-algorithm-2-bias-adaptation"
    assert github_anchor("Theorem 6.1: a_b") == "theorem-61-a_b"


def test_page_exists_and_names_both_papers():
    text = PAGE.read_text(encoding="utf-8")
    for arxiv in ("https://arxiv.org/abs/2506.14002", "https://arxiv.org/abs/2506.03093"):
        assert arxiv in text, f"{PAGE.relative_to(ROOT)} does not link {arxiv}"
    assert {"gba", "mp-sae", "gba-constants", "mp-sae-constants"} <= page_anchors()


def test_readme_links_the_papers_and_the_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for link in ("https://arxiv.org/abs/2506.14002", "https://arxiv.org/abs/2506.03093", "(docs/papers.md)"):
        assert link in text, f"README.md does not link {link}"


@pytest.mark.parametrize("path", cited_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_citation_of_files_outside_the_repository(path):
    bad = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()[:120]}"
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if OUTSIDE.search(line)
    ]
    assert bad == [], "cite docs/papers.md#<anchor> instead of gba.md / mp_sae.md:\n" + "\n".join(bad)


def test_every_cited_anchor_is_a_heading_of_the_page():
    anchors = page_anchors()
    missing, n_citations = [], 0
    for path in repository_text_files():
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for anchor in CITATION.findall(line):
                n_citations += 1
                if anchor not in anchors:
                    missing.append(f"{path.relative_to(ROOT)}:{i}: #{anchor}")
    assert n_citations > 0, "nothing cites docs/papers.md"
    assert missing == [], f"anchors not among the headings of {PAGE.relative_to(ROOT)}:\n" + "\n".join(missing)


def test_links_inside_the_page_resolve():
    anchors = page_anchors()
    missing = sorted(set(INTERNAL_LINK.findall(PAGE.read_text(encoding="utf-8"))) - anchors)
    assert missing == [], f"links to missing headings in {PAGE.relative_to(ROOT)}: {missing}"


def test_notebook_links_to_the_page_are_relative_to_the_notebook():
    # a notebook lives in notebooks/, so a clickable link to the page goes up one folder
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        text = path.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#]*papers\.md)#", text):
            assert (path.parent / target).resolve() == PAGE, f"{path.name}: link target {target!r} is not {PAGE}"
