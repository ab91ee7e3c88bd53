"""Test-suite setup: the suite (unit tests and notebooks) runs in quick mode unless told otherwise.

It also checks each notebook's prose against the outputs of nbval's own run of it (so no notebook is executed
twice): after the last code cell, every percentage in a markdown cell must have been printed by some cell or be
the paper's (``tests/prose_numbers.py``); otherwise that last cell's test fails, naming the numbers.
"""
import os

import pytest

os.environ.setdefault("INSTDISC_QUICK", "1")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if call.when != "call" or type(item).__name__ != "IPyNbCell":
        return
    notebook = item.parent
    printed = notebook.__dict__.setdefault("_printed", [])
    from tests.prose_numbers import output_text, unprinted

    printed += [output_text(o) for o in (item.test_outputs or [])]
    n_code = sum(c.cell_type == "code" for c in notebook.nb.cells)
    if item.cell_num != n_code - 1 or report.outcome != "passed":
        return
    missing = unprinted([c.source for c in notebook.nb.cells if c.cell_type == "markdown"], printed)
    if missing:
        report.outcome = "failed"
        report.longrepr = (f"{notebook.path.name}: the prose quotes {len(missing)} percentages that no cell printed "
                           f"and that are not the paper's: {', '.join(m + ' %' for m in missing)}. Print them from the "
                           "computation or the record, or say in words what to look for.")
