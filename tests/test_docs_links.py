"""The documentation's references resolve inside the repository.

- every ``docs/NAME.md#anchor`` cited in the code, the tests, the benchmarks, docs/ or the README
  names a file and a heading that exist (GitHub's anchors: lower case, spaces → '-', punctuation
  dropped);
- every ``docs/method.md §N`` cited names a section of docs/method.md;
- every relative markdown link in docs/, README.md and benchmarks/README.md names a file of the
  repository (and, with an anchor, a heading of it);
- docs/ and the README cite no file outside the repository (the method specification the project
  was built from is not part of it: docs/method.md carries its facts);
- the lab notebook's headings are unique, its index lists every file, and the results page stays
  a page.

Plain text reading only: no imports of dsrecon, no network.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: where citations of docs may appear (this file is skipped: its examples are not citations)
CITING = [ROOT / "dsrecon", ROOT / "benchmarks", ROOT / "tests", ROOT / "examples", DOCS, ROOT / "README.md"]
SUFFIXES = {".py", ".md", ".sh", ".txt", ".toml"}

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)
CITED_ANCHOR = re.compile(r"docs/([\w./-]+?\.md)#([\w-]+)")
CITED_SECTION = re.compile(r"docs/method\.md §(\d+)")
MD_LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup and punctuation dropped, lower case, spaces → '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def without_code(text: str) -> str:
    return FENCE.sub("", text)


def headings(path: Path) -> list[str]:
    return [m.group(2) for m in HEADING.finditer(without_code(path.read_text(encoding="utf-8")))]


@lru_cache(maxsize=None)
def anchors(path: Path) -> frozenset[str]:
    """Every anchor GitHub gives the headings of ``path`` (a repeated heading gets -1, -2, …)."""
    seen: Counter[str] = Counter()
    out = set()
    for h in headings(path):
        a = slug(h)
        out.add(a if seen[a] == 0 else f"{a}-{seen[a]}")
        seen[a] += 1
    return frozenset(out)


def citing_files() -> list[Path]:
    files: list[Path] = []
    for p in CITING:
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files += [f for f in sorted(p.rglob("*")) if f.suffix in SUFFIXES and f.is_file()
                      and "__pycache__" not in f.parts and f != Path(__file__).resolve()]
    return files


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted(DOCS.rglob("*.md"))]


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def test_every_cited_docs_anchor_exists():
    bad = []
    for f in citing_files():
        for m in CITED_ANCHOR.finditer(f.read_text(encoding="utf-8", errors="replace")):
            target = DOCS / m.group(1)
            if not target.is_file():
                bad.append(f"{rel(f)}: docs/{m.group(1)} does not exist")
            elif m.group(2) not in anchors(target):
                bad.append(f"{rel(f)}: docs/{m.group(1)} has no heading #{m.group(2)}")
    assert not bad, "\n".join(bad)


def test_every_cited_method_section_exists():
    sections = {m.group(1) for h in headings(DOCS / "method.md") if (m := re.match(r"§(\d+)\b", h))}
    bad = [f"{rel(f)}: docs/method.md has no §{m.group(1)}"
           for f in citing_files() for m in CITED_SECTION.finditer(f.read_text(encoding="utf-8", errors="replace"))
           if m.group(1) not in sections]
    assert not bad, "\n".join(bad)


def test_relative_markdown_links_resolve_inside_the_repository():
    bad = []
    for f in markdown_files():
        for m in MD_LINK.finditer(without_code(f.read_text(encoding="utf-8"))):
            link = m.group(1)
            if re.match(r"[a-z][a-z0-9+.-]*:", link):  # http:, https:, mailto:
                continue
            path, _, anchor = link.partition("#")
            target = (f.parent / path).resolve() if path else f
            if not target.exists() or ROOT not in (target, *target.parents):
                bad.append(f"{rel(f)}: ({link}) names no file of the repository")
            elif anchor and target.suffix == ".md" and anchor not in anchors(target):
                bad.append(f"{rel(f)}: ({link}) names no heading of {rel(target)}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("needle", ["ALGORITHMS.md", "ARCHITECTURE.md", "shared/docs", "/work/"])
def test_docs_cite_no_file_outside_the_repository(needle):
    bad = [rel(f) for f in markdown_files() if needle in f.read_text(encoding="utf-8")]
    assert not bad, f"{needle} cited in {bad}"


def test_code_cites_the_method_notes_not_the_outside_specification():
    bad = [rel(f) for f in citing_files() if f.suffix == ".py" and "ALGORITHMS.md" in f.read_text(encoding="utf-8")]
    assert not bad, f"ALGORITHMS.md cited in {bad}: cite docs/method.md §N"


def test_no_round_citation_left_in_the_library():
    """Evidence is cited as docs/experiments/FILE.md#heading, never as "round N" of a log."""
    bad = [f"{rel(f)}:{i}" for f in sorted((ROOT / "dsrecon").rglob("*.py"))
           for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
           if re.search(r"\brounds? \d", line)]
    assert not bad, "\n".join(bad)


def test_lab_notebook_headings_are_unique():
    counts = Counter(slug(h) for f in sorted((DOCS / "experiments").glob("*.md")) if f.name != "README.md"
                     for h in headings(f))
    assert not [a for a, n in counts.items() if n > 1]


def test_lab_notebook_index_lists_every_file():
    index = (DOCS / "experiments" / "README.md").read_text(encoding="utf-8")
    listed = {m.group(1) for m in MD_LINK.finditer(index)}
    files = {f.name for f in (DOCS / "experiments").glob("*.md") if f.name != "README.md"}
    assert files <= listed, f"not in docs/experiments/README.md: {sorted(files - listed)}"


def test_results_page_is_a_page():
    assert len((DOCS / "benchmarks.md").read_text(encoding="utf-8").splitlines()) < 400


def test_slug_follows_github():
    assert slug("Round 5 (2026-12-01): what the 0.30 target needs") == "round-5-2026-12-01-what-the-030-target-needs"
    assert slug("§7 The published benchmarks") == "7-the-published-benchmarks"
    assert slug("Round 11 (2026-12-05): validation (`--match-noise`)") == "round-11-2026-12-05-validation---match-noise"
