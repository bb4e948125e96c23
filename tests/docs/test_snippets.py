"""Every ```python block of the README and of ``docs/`` runs as written.

A page's blocks run in order in one namespace (a block may use what an earlier block of
the same page defined, as a reader pasting them would), in a fresh subprocess whose
working directory is an empty temporary folder, with a time limit
(``tests/docs/snippet_runner.py``). Blocks that are not meant to run are not marked
``python``: shell commands are ``bash``, printed output is ``text``.

The one budget cut is explicit: the test sets ``IAI_DOCS_MAX_STEPS=2`` (and
``IAI_DOCS_MAX_TASKS=4``), so that a snippet's ``fit(..., steps=500)`` trains 2 steps of
4 tasks (the runner's docstring says how); the snippets never show it, and every other
line, the data sizes and draws included, runs as written.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("snippet_runner.py")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
TIMEOUT_S = 900


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line, code)`` of each ```python block: the 0-based line of its first code line,
    and its code with the fence's indentation removed."""
    blocks = []
    for match in FENCE.finditer(text):
        indent = len(match["indent"])
        code = "".join(line[indent:] for line in match["body"].splitlines(keepends=True))
        blocks.append((text.count("\n", 0, match.start("body")), code))
    return blocks


def test_python_blocks_are_found_with_their_lines():
    text = "intro\n```python\nx = 1\n```\n\n```bash\nls\n```\n  ```python\n  y = x\n  ```\n"
    assert python_blocks(text) == [(2, "x = 1\n"), (9, "y = x\n")]


def _run(blocks: list, tmp_path, env: dict) -> subprocess.CompletedProcess:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "blocks.json"
    path.write_text(json.dumps(blocks))
    workdir = tmp_path / "work"
    workdir.mkdir()
    return subprocess.run(
        [sys.executable, str(RUNNER), str(path)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def test_runner_shares_one_namespace_and_names_the_failing_line(tmp_path):
    blocks = [["page.md", 3, "x = 2\n"], ["page.md", 10, "assert x == 2\nraise KeyError(x)\n"]]
    result = _run(blocks, tmp_path, dict(os.environ))
    assert result.returncode == 1
    assert 'File "page.md", line 12' in result.stderr and "KeyError: 2" in result.stderr


def test_runner_caps_fit_only_when_asked(tmp_path):
    code = (
        "from iai_prob.inference import fit, training\n"
        "print(hasattr(fit, '__wrapped__'), training.fit is fit)\n"
    )
    capped = _run(
        [["page.md", 0, code]], tmp_path / "on", {**os.environ, "IAI_DOCS_MAX_STEPS": "2"}
    )
    plain = _run([["page.md", 0, code]], tmp_path / "off", dict(os.environ))
    assert capped.stdout.split()[:2] == ["True", "True"], capped.stderr[-2000:]
    assert plain.stdout.split()[:2] == ["False", "True"], plain.stderr[-2000:]


def test_capped_fit_lowers_the_budget_and_nothing_else(tmp_path):
    sys.path.insert(0, str(RUNNER.parent))
    try:
        import snippet_runner
    finally:
        sys.path.remove(str(RUNNER.parent))
    capped = snippet_runner._capped(lambda *args, **kwargs: (args, kwargs), 2, 4)
    assert capped("guide", "tasks", steps=300, tasks_per_step=32, seed=1) == (
        ("guide", "tasks"),
        {"steps": 2, "tasks_per_step": 4, "seed": 1},
    )
    assert capped("guide", "tasks", steps=1, tasks_per_step=2)[1] == {
        "steps": 1,
        "tasks_per_step": 2,
    }
    assert capped("guide", "tasks")[1] == {"steps": 2, "tasks_per_step": 4}  # fit's defaults


# Pages whose blocks take minutes (JAX compiles, SBC, NUTS, training and resuming): 188 s,
# 169 s and 88 s of one worker in CI runs of 2026-12-06, a third of the suite's budget, and
# docs/regimes.md's 35 s (2026-12-07). `make test` leaves them out (marker ``heavy``);
# `make test-all` runs them.
HEAVY_PAGES = {
    "docs/numpyro.md",
    "docs/diagnostics.md",
    "docs/reliability.md",
    "docs/regimes.md",
}


def _page_param(page: Path):
    name = page.relative_to(ROOT).as_posix()
    marks = [pytest.mark.heavy] if name in HEAVY_PAGES else []
    return pytest.param(page, id=name, marks=marks)


@pytest.mark.slow
@pytest.mark.parametrize(
    "page", [_page_param(page) for page in PAGES if python_blocks(page.read_text())]
)
def test_snippets_run(page, tmp_path):
    name = page.relative_to(ROOT).as_posix()
    text = page.read_text()
    if "iai_prob.numpyro" in text:
        pytest.importorskip("numpyro", reason="the jax extra is not installed")
    if "distributed import" in text:
        pytest.importorskip("distributed", reason="the distributed extra is not installed")
    blocks = [[name, line, code] for line, code in python_blocks(text)]
    env = {**os.environ, "IAI_DOCS_MAX_STEPS": "2", "IAI_DOCS_MAX_TASKS": "4"}
    env.pop("XLA_FLAGS", None)  # a page that needs host devices sets them itself
    result = _run(blocks, tmp_path, env)
    assert result.returncode == 0, f"{name}: a python block failed\n{result.stderr[-4000:]}"
