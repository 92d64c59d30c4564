"""Every relative link in README.md, docs/ and the Markdown under results/ resolves: the file exists, and an
``#anchor`` names a heading of that file (GitHub's slug). Guides move text around; a dead link is a lost claim."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def _pages() -> List[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "results").rglob("*.md"))]


def _prose(text: str) -> Iterator[str]:
    """Lines outside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped (hyphens and underscores kept), spaces to
    hyphens."""
    text = re.sub(r"[*`]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set:
    seen: dict = {}
    out = set()
    for line in _prose(page.read_text()):
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> Iterator[Tuple[int, str]]:
    for number, line in enumerate(_prose(page.read_text()), 1):
        for m in LINK.finditer(re.sub(r"`[^`]*`", "", line)):  # a link inside code is not a link
            target = m.group(1) or m.group(2)
            if not re.match(r"[a-z]+:|//", target):  # http:, https:, mailto: are not checked here
                yield number, target


def dead_links(page: Path) -> List[str]:
    dead = []
    for number, target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            dead.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            dead.append(f"{page.relative_to(ROOT)}: {target} (no heading #{anchor})")
    return dead


def test_the_checker_finds_a_dead_file_and_a_dead_anchor(tmp_path):
    (tmp_path / "b.md").write_text("# Speed: blocks, channels or both\n")
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md#speed-blocks-channels-or-both) [gone](c.md) [bad](b.md#nope)\n"
                    "`[code](x.md)`\n```\n[fenced](y.md)\n```\n[web](https://example.com)\n")
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        assert dead_links(page) == ["a.md: c.md (no such file)", "a.md: b.md#nope (no heading #nope)"]
    finally:
        ROOT = old


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert dead_links(page) == []
