"""The notebooks as files: stored without outputs, in order, each with a badge, a setup cell and exercises.

Running them is nbval's job (``pytest --nbval-lax`` collects ``notebooks/*.ipynb``).
"""
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_the_sequence_is_complete_and_sorted():
    prefixes = [p.name[:3] for p in NOTEBOOKS]
    assert prefixes[:7] == ["00_", "01_", "02_", "03_", "04_", "05_", "06_"], prefixes


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_clean_and_well_formed(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "stored with outputs"
    first = "".join(nb["cells"][0]["source"])
    assert first.startswith("# ") and "colab.research.google.com" in first and "you will learn" in first
    setup = "".join(code[0]["source"])
    assert "import google.colab" in setup and "describe_setup()" in setup  # Colab checked in Python
    exercises = [c for c in code if "exercise" in c.get("metadata", {}).get("tags", [])]
    solutions = [c for c in code if c.get("metadata", {}).get("jupyter", {}).get("source_hidden")]
    assert exercises and len(solutions) == len(exercises), "each exercise needs a hidden, checked solution"
    assert all("check_" in "".join(c["source"]) for c in exercises + solutions)
    assert any("assert " in "".join(c["source"]) for c in code), "no assert cell: nothing is checked"


# Tags that nbval or JupyterLab honour and Colab and VS Code do not: a notebook that needs one stops at that cell
# under Run All there. Without them, nbval's own run of each notebook is a Run All with no tag honoured.
HONOURED_TAGS = {"raises-exception", "nbval-raises-exception", "skip-execution", "nbval-skip", "skip"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_a_lesson_is_at_most_12000_characters_of_prose(path):
    """A notebook is a lesson, not the lab book: how records were made belongs in benchmarks/RESULTS.md."""
    nb = json.loads(path.read_text())
    prose = sum(len("".join(c["source"])) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert prose <= 12_000, f"{prose:,} characters of markdown"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_run_all_needs_no_cell_tag(path):
    nb = json.loads(path.read_text())
    tagged = [(i, t) for i, c in enumerate(nb["cells"]) for t in c.get("metadata", {}).get("tags", []) if t in HONOURED_TAGS]
    assert not tagged, f"cells that rely on a tag Colab ignores (cell index, tag): {tagged}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_badge_and_colab_install_name_the_one_repository(path):
    """The repository URL lives in config.REPO; every badge and setup cell must agree with it."""
    from instdisc_lesson.config import PIP_SPEC, REPO

    nb = json.loads(path.read_text())
    badge = "".join(nb["cells"][0]["source"])
    assert f"colab.research.google.com/github/{REPO}/blob/main/notebooks/{path.name}" in badge
    setup = "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])
    assert f'"{PIP_SPEC}"' in setup, "the setup cell must install the course extra from config.REPO"
