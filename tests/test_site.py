"""The course as a web page (``python -m instdisc_lesson.site``), checked without and with a browser.

Without a browser (a few seconds, two tiny notebooks made here): a notebook that raises is still written
and marked failed on the index, the message names the notebook and the cell, the command exits 1; what
only a live kernel or the network can show (exercise errors, sliders, the Colab badge) becomes a note.

In a real browser (about 30 s): notebook 00, which has figures, math, an exercise and a hidden solution,
is built into a temporary folder and opened from ``file://`` in headless Chromium (Debian's ``chromium``
driven by Playwright, as in ``tests/test_browser.py``) with every request that is not ``file:`` or
``data:`` blocked. The reference is the executed notebook: the page shows as many loaded images as it has
image outputs, no error output, math typeset by the local MathJax with its web font, and nothing asked
for the network. Skipped, saying why, without Chromium or Playwright (fails instead with
``INSTDISC_REQUIRE_BROWSER=1``).
"""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from instdisc_lesson import site

ROOT = Path(__file__).resolve().parents[1]
IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def _notebook(path: Path, title: str, *cells) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\nEuler: $e^{{i\\pi}} + 1 = 0$.")] + list(cells)
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory):
    """Two tiny notebooks, one of which raises in its second code cell, built into a site."""
    folder = tmp_path_factory.mktemp("tiny")
    notebooks, out = folder / "notebooks", folder / "site"
    notebooks.mkdir()
    (folder / "README.md").write_text("| notebook | idea |\n|---|---|\n| `00_ok` | it **works**, `fine` |\n")
    exercise = nbformat.v4.new_code_cell('raise NotImplementedError("write it")',
                                         metadata={"tags": ["raises-exception"]})
    slider = nbformat.v4.new_code_cell(  # the notebooks' pattern: a slider and an Output area that it draws into
        "import ipywidgets as W\nout = W.Output()\ndisplay(W.VBox([W.IntSlider(), out]))\nwith out:\n    print(1)")
    progress = nbformat.v4.new_code_cell("from tqdm.auto import tqdm\nfor _ in tqdm(range(3), desc='steps'):\n    pass")
    _notebook(notebooks / "00_ok.ipynb", "00 · Fine", nbformat.v4.new_code_cell("print(6 * 7)"), slider, progress,
              nbformat.v4.new_markdown_cell("## 1 · First part: `code`\n\ntext\n\n### A detail"), exercise)
    _notebook(notebooks / "01_broken.ipynb", "01 · Broken", nbformat.v4.new_code_cell("x = 1"),
              nbformat.v4.new_code_cell("# a comment first\nraise ValueError('boom')"),
              nbformat.v4.new_code_cell("print('never')"))
    pages = site.build(notebooks, out, timeout=60)
    return notebooks, out, pages


def test_a_failed_notebook_is_written_and_named(tiny_site):
    _, out, pages = tiny_site
    ok, broken = pages
    assert ok.failure == "" and ok.title == "00 · Fine" and ok.idea == "it **works**, `fine`"
    assert broken.failure.startswith("code cell 2 (cell 3 of 4, `# a comment first`)"), broken.failure
    assert "ValueError: boom" in broken.failure
    index = (out / "index.html").read_text()
    assert 'href="00_ok.html"' in index and 'href="01_broken.html"' in index
    assert "<strong>works</strong>" in index and "<code>fine</code>" in index
    assert index.count('<tr class="failed"') == 1 and "ValueError: boom" in index
    page = (out / "01_broken.html").read_text()
    assert "This notebook failed" in page and 'class="output_error"' in page  # the real traceback stays
    executed = nbformat.read(out / "01_broken.ipynb", as_version=4)
    assert executed.cells[3].execution_count is None and not executed.cells[3].outputs  # stopped at the failure
    assert (out / "mathjax" / "MathJax.js").is_file()


def test_expected_exercise_errors_become_a_note(tiny_site):
    _, out, _ = tiny_site
    page = (out / "00_ok.html").read_text()
    assert "42" in page and "site-note" in page and "NotImplementedError: write it" in page
    assert page.count("move only in a running notebook") == 1 and site.WIDGET_MIME not in page
    assert "steps: 100%" in page and "3/3" in page  # a progress bar (a widget) shows its last state as text
    assert "Traceback" not in page and 'class="output_error"' not in page and "This notebook failed" not in page
    executed = nbformat.read(out / "00_ok.ipynb", as_version=4)  # the download keeps the real outputs
    assert executed.cells[5].outputs[0].output_type == "error"


def test_command_names_the_failed_notebook_and_exits_1(tiny_site, tmp_path, capsys):
    notebooks, _, _ = tiny_site
    assert site.main(["--notebooks", str(notebooks), "--out", str(tmp_path), "--only", "01", "--timeout", "60"]) == 1
    err = capsys.readouterr().err
    assert "FAILED 01_broken.ipynb: code cell 2" in err and "ValueError: boom" in err


@pytest.mark.parametrize("args, message", [
    (["--notebooks", "{tmp}/no/such"], "--notebooks {tmp}/no/such: no such folder"),
    (["--notebooks", "{tmp}/empty"], "--notebooks {tmp}/empty holds no .ipynb files"),
    (["--notebooks", "{tmp}/nbs", "--only", "99"], "--only 99: no notebook in {tmp}/nbs starts with that"),
    (["--notebooks", "{tmp}/nbs", "--out", "{tmp}/nbs"], "--out {tmp}/nbs: that is the notebooks' own folder"),
    (["--notebooks", "{tmp}/nbs", "--timeout", "0"], "--timeout 0: give a positive number of seconds"),
])
def test_the_command_refuses_first_as_argparse_does_and_writes_nothing(tmp_path, capsys, args, message):
    """A missing or empty notebooks folder, an --only that matches nothing: exit 2 with argparse's usage error,
    like the course's other commands, before any notebook runs; no --out folder is made."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "nbs").mkdir()
    _notebook(tmp_path / "nbs" / "00_a.ipynb", "00 · A")  # never executed: the refusal comes first
    args = [arg.format(tmp=tmp_path) for arg in args]
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as stop:
        site.main(args + ([] if "--out" in args else ["--out", str(tmp_path / "site")]))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("usage: python -m instdisc_lesson.site"), err
    assert f"python -m instdisc_lesson.site: error: {message.format(tmp=tmp_path)}" in err, err
    assert sorted(tmp_path.rglob("*")) == before


class _Links(HTMLParser):
    """Every link of a page, ``(attributes, text)``, and where it is: in a ``nav`` bar, in the table of contents."""

    def __init__(self, page: str):
        super().__init__()
        self.page, self.links, self.inside, self.ids = page, [], [], set()
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids.add(attrs.get("id"))
        if tag in ("nav", "details"):
            self.inside.append(attrs.get("class", ""))
        if tag == "a":
            self.links.append([{**attrs, "in": " ".join(self.inside)}, ""])

    def handle_endtag(self, tag):
        if tag in ("nav", "details"):
            self.inside.pop()

    def handle_data(self, data):
        if self.links and self.lasttag in ("a", "code"):
            self.links[-1][1] += data

    def where(self, part: str) -> list[tuple[dict, str]]:
        return [(attrs, text.strip()) for attrs, text in self.links if part in attrs["in"]]


def test_pages_link_to_the_previous_and_next_notebook_and_their_own_sections(tiny_site):
    _, out, _ = tiny_site
    first, second = _Links((out / "00_ok.html").read_text()), _Links((out / "01_broken.html").read_text())
    bars = first.where("site-nav")
    assert [(a["href"], a.get("rel"), text) for a, text in bars] == [
        ("index.html", None, "All notebooks"), ("01_broken.html", "next", "01 · Broken →")] * 2  # top and bottom
    assert [(a["href"], a.get("rel"), text) for a, text in second.where("site-nav")][:2] == [
        ("index.html", None, "All notebooks"), ("00_ok.html", "prev", "← 00 · Fine")]
    course = [(a["href"], a.get("aria-current"), text) for a, text in first.where("site-course")]
    assert course == [("00_ok.html", "page", "00 · Fine"), ("01_broken.html", None, "01 · Broken")]
    toc = first.where("site-toc")
    assert [text for _, text in toc] == ["1 · First part: code", "A detail"], toc
    assert all(a["href"].startswith("#") and a["href"][1:] in first.ids for a, _ in toc)  # each to its heading
    assert not second.where("site-toc") and site.site_navigation.CONTENTS not in second.page
    assert not [a for a, _ in first.links if a.get("href", "").startswith("http") and "site" in a["in"]]


def test_widgets_and_badge_are_made_static():
    nb = nbformat.v4.new_notebook()
    badge = "[![Open In Colab](https://colab.example/badge.svg)](https://colab.example/nb)"
    nb.cells = [nbformat.v4.new_markdown_cell(badge),
                nbformat.v4.new_code_cell("w")]
    nb.cells[1].outputs = [nbformat.v4.new_output("display_data", data={
        "text/plain": "VBox(...)", site.WIDGET_MIME: {"model_id": "abc", "version_major": 2, "version_minor": 0}})]
    site.for_the_web(nb)
    assert nb.cells[0].source == "[Open in Colab](https://colab.example/nb)"
    (out,) = nb.cells[1].outputs
    assert site.WIDGET_MIME not in out.data and "running notebook" in out.data["text/html"]


# --- in a real browser ---------------------------------------------------------------------------------

def test_site_pages_in_chromium_offline(chromium, tmp_path, monkeypatch):
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("CI", "1")  # the quick budget, as the documented command
    monkeypatch.setenv("INSTDISC_RUNS", str(tmp_path / "runs"))
    out = tmp_path / "site"
    pages = site.build(ROOT / "notebooks", out, only=["00"], timeout=600)
    assert [p.failure for p in pages] == [""], pages
    name = pages[0].name
    executed = nbformat.read(out / f"{name}.ipynb", as_version=4)
    outputs = [o for c in executed.cells for o in c.get("outputs", [])]
    n_images = sum(any(m in o.get("data", {}) for m in IMAGE_MIMES) for o in outputs)
    assert n_images >= 1

    network, broken = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:"))
                       else (network.append(route.request.url), route.abort()))
            # MathJax probes its font loader with about:blank, which always "fails": that is not a missing file
            page.on("requestfailed", lambda r: r.url.startswith("file:") and broken.append(r.url))

            page.goto((out / "index.html").as_uri())
            links = page.eval_on_selector_all("td > a", "els => els.map(e => e.getAttribute('href'))")
            assert links == [f"{name}.html"], links
            page.click(f"a[href='{name}.html']")

            page.wait_for_selector("body[data-math=typeset]", timeout=60_000)  # set when MathJax has finished
            state = page.evaluate("""() => ({
              widths: [...document.querySelectorAll('.jp-OutputArea img')].map(i => i.naturalWidth),
              math: document.querySelectorAll('.MathJax, .MathJax_Display').length,
              mathErrors: document.querySelectorAll('.MathJax_Error, merror').length,
              font: MathJax.OutputJax['HTML-CSS'].fontInUse,
              markdown: [...document.querySelectorAll('.jp-MarkdownCell')].map(e => e.innerText).join('\\n'),
              errors: document.querySelectorAll('.output_error').length,
              text: document.body.innerText,
              solutions: document.querySelectorAll('details.site-solution').length})""")
            page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
        finally:
            browser.close()
    assert len(state["widths"]) == n_images and all(w > 0 for w in state["widths"]), state["widths"]
    assert state["errors"] == 0 and "Traceback" not in state["text"]
    assert state["math"] >= 5 and state["mathErrors"] == 0 and state["font"] == "STIX-Web"
    assert "$" not in state["markdown"], "raw TeX left in a markdown cell"
    assert state["solutions"] >= 1
    assert network == [], f"the page asked for the network: {network}"
    assert broken == [], f"files missing from the site: {broken}"


def test_navigation_in_chromium_offline(chromium, tiny_site):
    """The tiny site in a real browser, from file:// with the network blocked: next and previous move between the
    pages, every table-of-contents entry reaches its section (CSS :target), the course list reaches every page."""
    from playwright.sync_api import sync_playwright

    _, out, _ = tiny_site
    network = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 500})
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:"))
                       else (network.append(route.request.url), route.abort()))
            page.goto((out / "index.html").as_uri())
            page.click("a[href='00_ok.html']")
            page.locator("nav.site-nav").first.locator("a[rel=next]").click()
            assert page.url.endswith("/01_broken.html")
            page.locator("nav.site-nav").last.locator("a[rel=prev]").click()  # the bar at the bottom
            assert page.url.endswith("/00_ok.html")
            entries = page.locator("details.site-toc a")
            targets = []
            for i in range(entries.count()):
                entries.nth(i).click()
                targets.append((entries.nth(i).get_attribute("href"),
                                page.evaluate("'#' + (document.querySelector(':target') || {}).id")))
            page.click("details.site-course summary")
            page.click("details.site-course a[href='01_broken.html']")
            assert page.url.endswith("/01_broken.html")
            page.locator("nav.site-nav").first.locator("a.site-index").click()
            assert page.url.endswith("/index.html")
        finally:
            browser.close()
    assert len(targets) == 2 and all(href == target for href, target in targets), targets
    assert network == [], f"the pages asked for the network: {network}"
