"""The course in a real browser: JupyterLab on localhost, driven by headless Chromium.

What nbval cannot see: that the widgets render in JupyterLab and answer a slider. The test
1. starts JupyterLab on 127.0.0.1 with a random token, on a copy of a notebook (so autosave cannot
   touch the course) and with its own settings (no news pop-ups, every cell kept in the page);
2. opens notebook 03 in headless Chromium (Debian's ``chromium``, driven by Playwright with the
   system browser as executable: nothing is downloaded), runs all cells from the Run menu;
3. moves the tau slider with the keyboard, as a learner would, and asserts that the plot under
   the sliders was redrawn (a different PNG) and that the readout moved;
4. saves screenshots before and after in ``runs/browser-test/``.

Needs ``chromium`` (``apt-get install --no-install-recommends chromium``) and the ``playwright``
pip package (in requirements.txt). Without them the test is skipped and says which is missing;
with ``INSTDISC_REQUIRE_BROWSER=1`` (set by ``.ci/run``) it fails instead, so CI cannot skip it.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "03_nce_and_Z.ipynb"
SHOTS = ROOT / "runs" / "browser-test"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]
# JupyterLab user settings: no news/update pop-ups, no autosave, and every cell rendered in the page
# (JupyterLab 4 otherwise leaves cells outside the viewport out of the DOM).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving a copy of the notebook; yields (url, token)."""
    work = tmp_path / "notebooks"
    work.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, work / NOTEBOOK)
    settings = tmp_path / "lab-settings"
    for name, value in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(value))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "INSTDISC_QUICK": "1", "INSTDISC_RUNS": str(tmp_path / "runs")}
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
           "--LabApp.expose_app_in_browser=True"]  # window.jupyterapp: the test reads the notebook model
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = tmp_path / "jupyterlab.log"
    with open(log, "w") as fh:
        server = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=work)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start (exit code {server.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


# Reads the open notebook's model through the JupyterLab app (exposed with --LabApp.expose_app_in_browser):
# per code cell its execution count (null while queued or not run), its tags and its error outputs.
NOTEBOOK_STATE_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = [];
  for (const cell of panel.content.model.cells) {
    if (cell.type !== "code") continue;
    const errors = [];
    for (let j = 0; j < cell.outputs.length; j++) {
      const out = cell.outputs.get(j).toJSON();
      if (out.output_type === "error") errors.push(out.ename + ": " + out.evalue);
    }
    cells.push({count: cell.executionCount, tags: cell.getMetadata("tags") || [], errors});
  }
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return {cells, kernel: kernel ? kernel.status : "none"};
}"""


def run_all(page, n_code: int, timeout_s: float = 900) -> list[dict]:
    """Run > Run All Cells, as a learner would, and wait until every code cell has run.

    No cell may raise: an exercise not yet written reports "not attempted yet" and the notebook goes on.
    Returns the per-cell state (execution count, tags, errors).
    """
    for attempt in range(3):  # a click that lands while the kernel is still being connected does nothing: retry
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        try:
            page.wait_for_function("els => els.some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))",
                                   arg=page.locator(".jp-CodeCell .jp-InputPrompt").element_handles(), timeout=30_000)
            break
        except Exception:
            if attempt == 2:
                raise AssertionError("Run All Cells did not start the notebook")
    deadline = time.monotonic() + timeout_s
    while True:
        dialog = page.locator(".jp-Dialog")
        if dialog.count():
            pytest.fail(f"JupyterLab opened a dialog: {dialog.first.inner_text()[:500]}")
        state = page.evaluate(NOTEBOOK_STATE_JS)
        cells = state["cells"]
        assert len(cells) == n_code, f"{len(cells)} code cells in JupyterLab, {n_code} in the file"
        for i, cell in enumerate(cells):
            if cell["errors"]:
                page.screenshot(path=str(SHOTS / "error.png"))
                pytest.fail(f"code cell {i + 1} raised in JupyterLab: {cell['errors']}")
        if state["kernel"] == "idle" and all(cell["count"] is not None for cell in cells):
            return cells
        assert time.monotonic() < deadline, f"the notebook did not finish in {timeout_s:.0f} s: {state}"
        time.sleep(1)


def _slider_plot_src(box) -> str:
    """The PNG (a data: URL) that the Output area under the sliders shows now."""
    img = box.locator(".widget-output img").first
    img.wait_for(state="visible", timeout=120_000)
    return img.get_attribute("src")


def test_slider_redraws_plot_in_jupyterlab(chromium, lab):
    from playwright.sync_api import sync_playwright

    url, token = lab
    SHOTS.mkdir(parents=True, exist_ok=True)
    n_code = sum(c["cell_type"] == "code" for c in json.loads((ROOT / "notebooks" / NOTEBOOK).read_text())["cells"])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/tree/{NOTEBOOK}?reset&token={token}", timeout=120_000)
            # the kernel is connected once the status bar names it as idle
            page.locator(".jp-StatusBar-Widget", has_text="Idle").first.wait_for(timeout=120_000)
            ran = run_all(page, n_code)
            assert [c["count"] for c in ran] == list(range(1, n_code + 1)), "cells ran out of order or twice"

            # The widget box that holds the tau and m sliders and the plot they draw.
            box = page.locator(".widget-vbox", has=page.locator(".widget-slider")).first
            box.scroll_into_view_if_needed()
            slider = box.locator(".widget-slider").first
            assert "τ" in slider.inner_text() or "tau" in slider.inner_text(), slider.inner_text()
            readout = slider.locator(".widget-readout")
            before_value, before_src = readout.inner_text(), _slider_plot_src(box)
            box.screenshot(path=str(SHOTS / "slider_before.png"))

            slider.locator(".noUi-handle").first.focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_function(
                "([el, src]) => { const img = el.querySelector('.widget-output img');"
                " return img !== null && img.getAttribute('src') !== src; }",
                arg=[box.element_handle(), before_src], timeout=120_000)
            after_value, after_src = readout.inner_text(), _slider_plot_src(box)
            box.screenshot(path=str(SHOTS / "slider_after.png"))
            page.screenshot(path=str(SHOTS / "jupyterlab.png"))
        finally:
            browser.close()
    assert after_value != before_value, f"the slider readout did not move ({before_value!r})"
    assert after_src != before_src and after_src.startswith("data:image/png"), "the plot was not redrawn"
    print(f"tau {before_value} -> {after_value}: plot redrawn; screenshots in {SHOTS}")
