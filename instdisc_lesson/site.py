"""The course as a web page: every notebook executed on a fresh kernel and written out as static HTML.

    CI=1 python -m instdisc_lesson.site [--out site] [--notebooks notebooks] [--only 00 03] [--timeout 600]

``CI=1`` picks the quick budget (``config.budget``; ``INSTDISC_BUDGET`` may name another). Each notebook
runs top to bottom in its own kernel with the notebook folder as working directory, as ``pytest --nbval-lax``
runs it, and is written to ``OUT/NAME.html`` with every figure embedded (and, with its outputs, to
``OUT/NAME.ipynb``). ``OUT/index.html`` links them all, each with its title (the notebook's first heading),
its one-line idea (the README's table of notebooks), its execution time and whether it ran. Each page links
to the index, the previous and the next notebook, lists the course, and has a table of contents of its own
sections (``site_navigation.py``). A notebook that raises is still written, up to the cell that failed, and
marked failed on the index; the command names the notebook and the cell and exits with status 1. A missing
or empty notebooks folder, or an ``--only`` that matches nothing, is refused first (status 2, argparse's
usage error), with nothing written.

Nothing on the pages needs a network. Math is typeset by MathJax 2.7 from the files of the
``jupyter-server-mathjax`` package, copied into ``OUT/mathjax/`` (nbconvert would load it from a CDN).
What only a live kernel can show is replaced by what it last showed or by one line saying so: a slider
(ipywidgets) becomes a note (the static figure beside it stays), a progress bar its last line of text, an
exercise cell's expected ``NotImplementedError`` a note instead of a traceback, and the Colab badge (an
image on Google's server) a plain link. A solution cell, hidden in the notebook, is folded into a
"Solution" box.
"""
from __future__ import annotations

import argparse
import html
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jinja2
import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

from . import site_navigation

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\(([^)]*)\)")  # [![Open In Colab](badge.svg)](url)

# nbconvert's "lab" template with everything that would reach the network taken out (require.js, mermaid,
# the widget renderer, MathJax from a CDN), MathJax loaded from OUT/mathjax/, and hidden solutions folded.
TEMPLATE = r"""{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}
<script type="text/x-mathjax-config">
MathJax.Hub.Config({
  tex2jax: {inlineMath: [["$", "$"], ["\\(", "\\)"]], displayMath: [["$$", "$$"], ["\\[", "\\]"]],
            processEscapes: true, processEnvironments: true},
  TeX: {equationNumbers: {autoNumber: "AMS", useLabelIds: true}},
  "HTML-CSS": {availableFonts: [], imageFont: null, preferredFont: null, webFont: "STIX-Web",
               linebreaks: {automatic: true}},
  displayAlign: "center", messageStyle: "none", showMathMenu: false, menuSettings: {zoom: "None"}
});
MathJax.Hub.Queue(function () { document.body.setAttribute("data-math", "typeset"); });
</script>
<script src="mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"></script>
<style>
.site-bar { font: 14px sans-serif; padding: 8px 16px; background: #f3f3f3; border-bottom: 1px solid #ddd; }
.site-failed { background: #fde8e8; color: #8a1111; font-weight: bold; }
.site-note { font: 13px sans-serif; color: #555; background: #f7f7f0; border-left: 3px solid #c9b458;
             padding: 4px 8px; }
details.site-solution > summary { cursor: pointer; font: 13px sans-serif; color: #555; padding: 4px 0 4px 64px; }
.output_error { border-left: 4px solid #d33; }
/* the hidden MathML kept for screen readers would ask for MathJax's TeX fonts, which the package does not ship */
.MJX_Assistive_MathML * { font-family: serif !important; }
{{ resources.site_css }}
</style>
{%- endblock html_head_js_mathjax -%}
{%- block body_header -%}
{{ super() }}
{{ resources.site_nav }}
{%- if resources.site_failure %}
<div class="site-bar site-failed">This notebook failed: {{ resources.site_failure | e }};
the cells after it did not run.</div>
{%- endif %}
{%- endblock body_header -%}
{% block input_group -%}
{%- if cell.metadata.get("jupyter", {}).get("source_hidden") -%}
<details class="site-solution"><summary>Solution (hidden in the notebook: click to show)</summary>
{{ super() }}</details>
{%- else -%}{{ super() }}{%- endif -%}
{%- endblock input_group %}
{% block body_footer -%}
{{ resources.site_footer }}
{{ super() }}
{%- endblock body_footer %}
{% block error -%}
<div class="output_error">{{ super() }}</div>
{%- endblock error %}
"""


@dataclass
class Page:
    """One notebook of the site: where it came from, what it is called, how its execution went."""

    name: str          # file stem, e.g. "03_nce_and_Z"
    title: str         # the notebook's first markdown heading
    idea: str          # one line, from the README's table of notebooks
    seconds: float     # execution time on a fresh kernel
    failure: str = ""  # empty when every cell ran; else which cell failed, and how


def title_of(nb) -> str:
    """The first markdown heading of the notebook (``# 03 · NCE ...`` gives ``03 · NCE ...``)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return ""


def ideas_from_readme(readme: Path) -> dict[str, str]:
    """``{notebook name: idea}`` from the README's table ``| `NAME` | idea | time |`` (empty if none)."""
    if not readme.is_file():
        return {}
    rows = re.findall(r"^\|\s*`(\d\d_[^`]+)`\s*\|([^|]+)\|", readme.read_text(encoding="utf-8"), flags=re.M)
    return {name: idea.strip() for name, idea in rows}


def inline_markdown(text: str) -> str:
    """The README's **bold** and `code` as HTML, everything else escaped."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def execute(nb, folder: Path, timeout: int) -> str:
    """Run every cell of ``nb`` in place on a fresh kernel whose working directory is ``folder``.

    Returns "" when all ran, else one line naming the cell that failed (cells tagged ``raises-exception``,
    the exercises, may raise, as under nbval). The cells after a failure are left unexecuted.
    """
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(folder)}})
    code_cells, failure = 0, ""
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            code_cells += cell.cell_type == "code"
            try:
                client.execute_cell(cell, index, execution_count=code_cells)
            except Exception as error:  # CellExecutionError, CellTimeoutError, DeadKernelError, ...
                first_line = next((line for line in cell.source.splitlines() if line.strip()), "")
                errors = [f"{o.ename}: {o.evalue}" if o.evalue else o.ename
                          for o in cell.get("outputs", []) if o.output_type == "error"]
                reason = errors[0] if errors else (str(error).strip() or type(error).__name__).splitlines()[-1]
                where = f"cell {index + 1} of {len(nb.cells)}, `{first_line[:80]}`"
                failure = f"code cell {code_cells} ({where}) raised {reason}"
                break
        client.set_widgets_metadata()  # the widgets' last state, in nb.metadata.widgets (read by for_the_web)
    return failure


def note(text: str) -> dict:
    """An output cell that shows ``text`` (HTML) as a small grey note."""
    return nbformat.v4.new_output("display_data", data={"text/html": f'<div class="site-note">{text}</div>',
                                                       "text/plain": re.sub("<[^>]+>", "", text)})


def widget_tree(nb, model_id: str) -> list[dict]:
    """The widget ``model_id`` and every widget inside it, from the state stored in the notebook's metadata."""
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    models, todo = [], [model_id]
    while todo:
        model = state.get(todo.pop(0), {})
        models.append(model)
        todo += [child.removeprefix("IPY_MODEL_") for child in model.get("state", {}).get("children", [])]
    return models


def for_the_web(nb) -> None:
    """Replace, in place, what only a live kernel (or the network) can show by a line that says so."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = BADGE.sub(r"[Open in Colab](\1)", cell.source)
            continue
        if cell.cell_type != "code":
            continue
        exercise = "raises-exception" in cell.metadata.get("tags", [])
        outputs, sliders_noted = [], False
        for out in cell.get("outputs", []):
            if out.output_type == "error" and exercise:
                outputs.append(note(f"Exercise: until you write your code this cell stops with "
                                    f"<code>{html.escape(out.ename)}: {html.escape(out.evalue)}</code> "
                                    "(the solution is the folded cell below)."))
            elif WIDGET_MIME in out.get("data", {}):
                models = widget_tree(nb, out.data[WIDGET_MIME]["model_id"])
                if any(m.get("model_name") in ("FloatProgressModel", "IntProgressModel") for m in models):
                    # a progress bar (tqdm): its last words, e.g. "softmax/convnet: 100% 8/8 [00:03<00:00, 2.3it/s]"
                    words = [html.unescape(re.sub("<[^>]+>", "", m["state"].get("value", ""))).strip()
                             for m in models if m.get("model_name") == "HTMLModel"]
                    text = " ".join(" ".join(words).split())  # tqdm pads with figure spaces
                    outputs.append(nbformat.v4.new_output("stream", name="stdout", text=text + "\n"))
                elif not sliders_noted:  # one note per cell
                    sliders_noted = True
                    outputs.append(note("Sliders here (ipywidgets) move only in a running notebook: open it in "
                                        "JupyterLab or Colab. The static figure beside them shows the same."))
            else:
                outputs.append(out)
        cell.outputs = outputs
    nb.metadata.pop("widgets", None)


def render(nb, failure: str, course: list[tuple[str, str]] | None = None, i: int = 0) -> str:
    """The notebook as one HTML page (figures embedded as data: URLs), in nbconvert's lab style; with ``course``
    (every page's ``(name, title)``, in order; this one is ``course[i]``) the links to the others and a table of
    contents of its sections (``site_navigation.py``)."""
    exporter = HTMLExporter(template_name="lab", extra_loaders=[jinja2.DictLoader({"site.html.j2": TEMPLATE})],
                            template_file="site.html.j2")
    course = course or []  # a page alone: the index link and its table of contents
    resources = {"site_failure": failure, "site_css": site_navigation.CSS,
                 "site_nav": site_navigation.navigation(course, i),
                 "site_footer": site_navigation.navigation(course, i, contents=False)}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return site_navigation.with_contents(body)


def copy_mathjax(out: Path) -> None:
    """MathJax 2.7 (from the ``jupyter-server-mathjax`` package) into ``out/mathjax/``, once."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        print("warning: jupyter-server-mathjax is not installed (pip install jupyter-server-mathjax): "
              "the pages show math as LaTeX source", file=sys.stderr)
        return
    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    if not (out / "mathjax" / "MathJax.js").is_file():
        shutil.copytree(source, out / "mathjax", dirs_exist_ok=True)


def write_index(out: Path, pages: list[Page]) -> None:
    """``out/index.html``: one row per notebook with its link, idea, execution time and status."""
    rows = []
    for page in pages:
        status = (f'<span class="failed">failed: {html.escape(page.failure)}</span>' if page.failure
                  else '<span class="ok">ran</span>')
        rows.append(f'<tr class="{"failed" if page.failure else "ok"}">'
                    f'<td><a href="{page.name}.html">{html.escape(page.title or page.name)}</a> '
                    f'<small>(<a href="{page.name}.ipynb">.ipynb</a>)</small></td>'
                    f"<td>{inline_markdown(page.idea)}</td><td>{page.seconds:.0f} s</td><td>{status}</td></tr>")
    total = sum(page.seconds for page in pages)
    failed = sum(bool(page.failure) for page in pages)
    out.joinpath("index.html").write_text(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Instance Discrimination, from scratch</title>
<style>
body {{ font: 15px/1.45 sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }}
td:nth-child(3) {{ white-space: nowrap; text-align: right; }}
span.failed {{ color: #a11; font-weight: bold; }} span.ok {{ color: #275; }} tr.failed {{ background: #fdf0f0; }}
</style></head><body>
<h1>Instance Discrimination, from scratch</h1>
<p>The course's notebooks, each executed top to bottom on a fresh kernel ({len(pages) - failed} of {len(pages)} ran,
{total:.0f} s in all). Sliders need a running notebook; every page shows the static figures.</p>
<table><thead><tr><th>notebook</th><th>idea</th><th>time</th><th>status</th></tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
""", encoding="utf-8")


def chosen(notebooks: Path, out: Path, only: list[str] | None = None) -> list[Path]:
    """The notebooks to build, in order; a ValueError saying what to do when there are none, or when ``out``
    is the notebooks' own folder. Checked before anything is written."""
    if not notebooks.is_dir():
        raise ValueError(f"--notebooks {notebooks}: " + ("is a file, not a folder" if notebooks.exists() else
                         "no such folder") + "; name the folder of the course's .ipynb files (e.g. notebooks)")
    paths = sorted(notebooks.glob("*.ipynb"))
    if not paths:
        raise ValueError(f"--notebooks {notebooks} holds no .ipynb files; name the folder of the course's notebooks")
    if only:
        paths = [p for p in paths if any(p.name.startswith(prefix) for prefix in only)]
        if not paths:
            raise ValueError(f"--only {' '.join(only)}: no notebook in {notebooks} starts with that")
    if out.resolve() == notebooks.resolve():
        raise ValueError(f"--out {out}: that is the notebooks' own folder; name another (e.g. site)")
    return paths


def build(notebooks: Path, out: Path, only: list[str] | None = None, timeout: int = 600) -> list[Page]:
    """Execute and render every notebook in ``notebooks`` (or those whose name starts with one of ``only``),
    each page linked to the previous and the next one."""
    paths = chosen(notebooks, out, only)
    books = [nbformat.read(path, as_version=4) for path in paths]
    course = [(path.stem, title_of(nb)) for path, nb in zip(paths, books)]
    out.mkdir(parents=True, exist_ok=True)
    copy_mathjax(out)
    ideas = ideas_from_readme(notebooks.resolve().parent / "README.md")
    pages = []
    for i, (path, nb) in enumerate(zip(paths, books)):
        print(f"{path.name}: running ...", flush=True)
        start = time.perf_counter()
        failure = execute(nb, path.parent.resolve(), timeout)
        seconds = time.perf_counter() - start
        nbformat.write(nb, out / path.name)  # the executed notebook, outputs included, for download
        for_the_web(nb)
        out.joinpath(f"{path.stem}.html").write_text(render(nb, failure, course, i), encoding="utf-8")
        pages.append(Page(path.stem, title_of(nb), ideas.get(path.stem, ""), seconds, failure))
        print(f"{path.name}: {'FAILED, ' + failure if failure else 'ran'} ({seconds:.0f} s)", flush=True)
    write_index(out, pages)
    return pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m instdisc_lesson.site", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("site"), metavar="FOLDER",
                        help="folder for the HTML pages (default: site)")
    parser.add_argument("--notebooks", type=Path, default=Path("notebooks"), metavar="FOLDER",
                        help="folder of the .ipynb files; the README beside it gives the ideas (default: notebooks)")
    parser.add_argument("--only", nargs="+", metavar="PREFIX",
                        help="only the notebooks whose names start so, e.g. 00 03")
    parser.add_argument("--timeout", type=int, default=600, metavar="SECONDS",
                        help="seconds one cell may run (default: 600)")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error(f"--timeout {args.timeout}: give a positive number of seconds")
    try:
        chosen(args.notebooks, args.out, args.only)  # refused before anything is written, as argparse refuses
    except ValueError as err:
        parser.error(str(err))
    pages = build(args.notebooks, args.out, args.only, args.timeout)
    failed = [page for page in pages if page.failure]
    print(f"wrote {args.out / 'index.html'}: {len(pages) - len(failed)} of {len(pages)} notebooks ran, "
          f"{sum(p.seconds for p in pages):.0f} s in all")
    for page in failed:
        print(f"FAILED {page.name}.ipynb: {page.failure}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
