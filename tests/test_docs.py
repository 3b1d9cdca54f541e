"""The README and docs/ stay true: every Python block runs as written, every relative link resolves, the layout list
names every module and no module that is gone, and the README stays a landing page."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def python_blocks():
    for page in PAGES:
        for number, match in enumerate(m for m in FENCE.finditer(page.read_text()) if m.group(1) == "python"):
            yield pytest.param(match.group(2), id=f"{page.relative_to(ROOT)}-{number}")


@pytest.mark.parametrize("code", list(python_blocks()))
def test_every_python_block_runs_as_written(code, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]


def slug(heading: str) -> str:
    """The anchor a markdown renderer gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for page in PAGES:
        text = FENCE.sub("", page.read_text())  # links inside code blocks are not links
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md":
                headings = {slug(h) for h in re.findall(r"^#+ (.*)$", FENCE.sub("", resolved.read_text()), re.M)}
                if anchor not in headings:
                    broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken


def test_the_layout_list_names_every_module_and_only_modules_that_exist():
    block = FENCE.search((ROOT / "docs" / "internals.md").read_text().split("## Layout", 1)[1]).group(2)
    listed = set(re.findall(r"[\w./]+\.py\b", block))
    modules = {p for p in (ROOT / "goft").rglob("*.py") if p.name != "__init__.py" or p.parent == ROOT / "goft"}
    missing = sorted(str(p.relative_to(ROOT)) for p in modules if p.name not in {Path(n).name for n in listed})
    assert not missing, f"modules the layout list leaves out: {missing}"
    everything = {p.name for p in ROOT.rglob("*.py") if ".venv" not in p.parts}
    gone = sorted(n for n in listed if Path(n).name not in everything)
    assert not gone, f"the layout list names files that do not exist: {gone}"


def test_the_readme_is_a_landing_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


@pytest.mark.slow
def test_the_readmes_command_line_walk_through_runs_as_written(tmp_path):
    section = (ROOT / "README.md").read_text().split("## The command line", 1)[1]
    block = next(m.group(2) for m in FENCE.finditer(section) if m.group(1) == "bash")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for line in block.splitlines():
        command = line.split("  #", 1)[0].strip()  # a comment starts after two spaces
        argv = shlex.split(command)
        assert argv[0] == "goft", line
        result = subprocess.run(
            [sys.executable, "-m", "goft", *argv[1:]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
    assert (tmp_path / "runs" / "merged" / "config.json").is_file()
    assert (tmp_path / "runs" / "compare" / "polarity.md").is_file()
