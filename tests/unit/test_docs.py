"""The README and docs/ are what a newcomer reads: every relative link and anchor resolves, and
nothing in the repository cites a document that is not in it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
#: Citations of documents kept outside the repository (the specs and decision notes).
OUTSIDE = re.compile(r"spec §|DECISIONS|\bgap [0-9]|§[0-9]|\.\./shared")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    anchors: set[str] = set()
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#+ (.*)", line)):
            anchors.add(_slug(match.group(1)))
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (
            anchor and linked.suffix == ".md" and anchor not in _anchors(linked)
        ):
            broken.append(target)
    assert broken == [], f"{page.name}: broken links {broken}"


def test_the_readme_keeps_the_sections_others_link_to() -> None:
    anchors = _anchors(ROOT / "README.md")
    for section in ("quickstart", "layout", "authorization", "limits", "configuration"):
        assert section in anchors


def test_nothing_cites_documents_outside_the_repository() -> None:
    files = subprocess.run(
        ["git", "ls-files", "*.py", "*.md", "*.yml", "*.toml", "Makefile", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    hits = [
        f"{name}:{number}"
        for name in files
        if name != "tests/unit/test_docs.py" and (ROOT / name).is_file()
        for number, line in enumerate((ROOT / name).read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert hits == []
