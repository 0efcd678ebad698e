"""The docs' listings are the tool's output: every ```console block of docs/tutorial.md and
docs/walkthrough.md is run, command by command, and what it shows must be there.

A block holds commands (lines starting with ``$ ``) each followed by the lines it shows. The commands
run in bash, in order, in one scratch directory per document (so a later command sees the files an
earlier one wrote), with ``examples`` linked into it and ``lpuc`` and ``python`` meaning this
checkout's. The shown lines must appear in the command's output (stdout, then stderr) in the order
given, others may come between: a line matches an output line equal to it (trailing blanks aside),
or, when it ends in `` ...``, one that starts with what comes before that; a line ``...`` only says that
lines were left out. A command must not crash (no traceback).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = {"tutorial": ROOT / "docs" / "tutorial.md", "walkthrough": ROOT / "docs" / "walkthrough.md"}


def console_blocks(text: str) -> list[tuple[int, list[tuple[str, list[str]]]]]:
    """Per ```console block: (its line number, [(command, the lines it shows)])."""
    out = []
    for m in re.finditer(r"^```console\n(.*?)^```", text, flags=re.S | re.M):
        line = text.count("\n", 0, m.start()) + 1
        steps: list[tuple[str, list[str]]] = []
        for ln in m.group(1).splitlines():
            if ln.startswith("$ "):
                steps.append((ln[2:], []))
            elif steps:
                steps[-1][1].append(ln.rstrip())
            elif ln.strip():
                raise AssertionError(f"line {line}: a console block starts with a command ('$ ...')")
        out.append((line, steps))
    return out


def shows(expected: list[str], output: list[str]) -> str | None:
    """None if the expected lines appear in the output in order (``console_blocks``' rules), else the
    first one that does not."""
    i = 0
    for want in expected:
        if want.strip() in ("", "..."):
            continue
        prefix = want[:-4] if want.endswith(" ...") else None
        while i < len(output):
            got = output[i].rstrip()
            i += 1
            if got == want or (prefix is not None and got.startswith(prefix)):
                break
        else:
            return want
    return None


@pytest.fixture(scope="module")
def shell(tmp_path_factory):  # noqa: ANN201 - a function that runs one command line
    bin_dir = tmp_path_factory.mktemp("bin")
    for name, line in (("lpuc", f'exec "{sys.executable}" -m lpuc "$@"'), ("python", f'exec "{sys.executable}" "$@"')):
        p = bin_dir / name
        p.write_text(f"#!/bin/bash\n{line}\n")
        p.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
           "COLUMNS": "200"}

    def run(cmd: str, cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)

    return run


@pytest.mark.parametrize("doc", list(DOCS))
def test_every_console_block_shows_what_the_tool_prints(doc, shell, tmp_path):
    text = DOCS[doc].read_text()
    blocks = console_blocks(text)
    assert blocks, f"{doc}: no console blocks"
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    for line, steps in blocks:
        for cmd, expected in steps:
            r = shell(cmd, tmp_path)
            output = (r.stdout + r.stderr).splitlines()
            assert "Traceback" not in r.stderr, f"{doc}.md line {line}: {cmd}\n{r.stderr}"
            missing = shows(expected, output)
            assert missing is None, (f"{doc}.md line {line}: `{cmd}` does not show\n  {missing}\n"
                                     f"it printed:\n" + "\n".join(output[:80]))


def test_shows_matches_in_order_with_prefixes():
    out = ["a 1", "b 2", "c 3"]
    assert shows(["a 1", "...", "c 3"], out) is None
    assert shows(["b ...", "c 3"], out) is None
    assert shows(["c 3", "a 1"], out) == "a 1"  # order matters
    assert shows(["b"], out) == "b"  # a whole line, unless it ends in " ..."
