"""README.md and docs/: every relative link resolves, every command named exists.

A page moved or renamed, a heading reworded or a script deleted must fail here, not
in a reader's browser or shell.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shlex
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose(text: str) -> str:
    """The page without fenced blocks and inline code, where brackets are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def links(page: Path) -> list[str]:
    return LINK.findall(prose(page.read_text(encoding="utf-8")))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = unicodedata.normalize("NFKC", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def test_slug_follows_github():
    assert slug("Outputs of `rud_predict`") == "outputs-of-rud_predict"
    assert slug("Nodules of 3-30 mm at CT scale") == "nodules-of-3-30-mm-at-ct-scale"
    assert slug("The house: for contributors") == "the-house-for-contributors"


def test_link_parser_skips_code():
    text = "see [a](a.md) and `[b](b.md)`\n```\n[c](c.md)\n```\n![fig](d.png \"title\")\n"
    assert LINK.findall(prose(text)) == ["a.md", "d.png"]


def test_pages_exist():
    names = {p.name for p in PAGES}
    for page in ("getting_started.md", "dataset.md", "planning.md", "training.md", "prediction.md",
                 "evaluation.md", "models.md", "gpus.md", "reliability.md", "house.md",
                 "toy_study.md", "nodules.md", "speed.md"):
        assert page in names, f"docs/{page} is missing"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path):
    broken = []
    for target in links(page):
        if SCHEME.match(target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        dest = page if not path else (page.parent / path).resolve()
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
            continue
        if ROOT not in dest.parents and dest != ROOT:
            broken.append(f"{target}: outside the repository")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not broken, f"{page.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)


def test_every_page_is_linked():
    """No page of docs/ is an orphan: README or another page links to it."""
    linked = set()
    for page in PAGES:
        for target in links(page):
            path = target.partition("#")[0]
            if path and not SCHEME.match(path):
                linked.add((page.parent / path).resolve())
    orphans = [str(p.relative_to(ROOT)) for p in PAGES[1:] if p.resolve() not in linked]
    assert not orphans, f"pages no link reaches: {orphans}"


def shell_commands(block: str) -> list[list[str]]:
    """The simple commands of a shell block: comments dropped, split at && and ;."""
    out = []
    joined = block.replace("\\\n", " ")
    for line in joined.splitlines():
        line = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
        for part in re.split(r"&&|;|\|\|", line):
            try:
                words = shlex.split(part)
            except ValueError:
                words = part.split()
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                words = words[1:]          # VAR=value prefixes
            if words:
                out.append(words)
    return out


def console_scripts() -> set[str]:
    return {ep.name for ep in importlib.metadata.entry_points(group="console_scripts")}


def check_command(words: list[str], scripts: set[str]) -> str | None:
    """None when the command is there to run; else what is missing."""
    head = words[0]
    if head == "bash":
        path = ROOT / words[1]
        return None if path.is_file() else f"{words[1]}: no such script"
    if head.endswith("python") or head.endswith("python3"):
        if head.startswith(".venv/") and not (ROOT / head).exists() and sys.prefix == sys.base_prefix:
            return f"{head}: no virtual environment"
        if len(words) > 2 and words[1] == "-m":
            module = words[2]
            return None if importlib.util.find_spec(module) else f"python -m {module}: no module"
        if len(words) > 1 and words[1].endswith(".py"):
            return None if (ROOT / words[1]).is_file() else f"{words[1]}: no such script"
        return None
    if head.startswith("rud_"):
        return None if head in scripts else f"{head}: not an installed entry point"
    return None


def test_readme_first_block_commands_exist():
    blocks = FENCE.findall(README.read_text(encoding="utf-8"))
    assert blocks, "README.md has no code block"
    first = shell_commands(blocks[0])
    assert first, "README.md's first block names no command"
    scripts = console_scripts()
    missing = [m for words in first if (m := check_command(words, scripts))]
    assert not missing, "README.md's first block: " + "; ".join(missing)
    assert any(w[:2] == ["bash", "scripts/setup.sh"] for w in first)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_in_blocks_exist(page: Path):
    """Every rud_* command, script and python -m module named in a shell block is there."""
    scripts = console_scripts()
    missing = []
    for block in FENCE.findall(page.read_text(encoding="utf-8")):
        for words in shell_commands(block):
            if words[0] in ("torchrun",):
                words = [w for w in words[1:] if not w.startswith("-") and not w.isdigit()]
                if not words:
                    continue
            if (problem := check_command(words, scripts)) is not None:
                missing.append(problem)
    assert not missing, f"{page.relative_to(ROOT)}: " + "; ".join(sorted(set(missing)))


def test_check_command_fails_on_missing():
    scripts = {"rud_plan"}
    assert check_command(["bash", "scripts/nothing_here.sh"], scripts)
    assert check_command(["rud_nothing", "-t", "1"], scripts)
    assert check_command([".venv/bin/python", "scripts/nothing.py"], scripts)
    assert check_command(["python", "-m", "no_module_of_that_name_xyz"], scripts)
    assert check_command(["rud_plan", "-t", "1"], scripts) is None
    assert check_command(["bash", "scripts/setup.sh"], scripts) is None


def test_named_scripts_exist():
    """Every scripts/<name> that a page names, in code or prose, is a file."""
    missing = []
    for page in PAGES:
        for name in re.findall(r"scripts/([\w.-]+\.(?:py|sh))", page.read_text(encoding="utf-8")):
            if not (ROOT / "scripts" / name).is_file():
                missing.append(f"{page.relative_to(ROOT)}: scripts/{name}")
    assert not missing, missing
