"""How the course site's pages link up (``site.py``): every notebook in order, the previous and the next one, and
each page's own table of contents, built from its section headings. Plain links, no script: fully offline.

``navigation(course, i)`` is the bar at the top and the bottom of page ``i``; ``with_contents(page)`` fills the
page's table of contents from the headings nbconvert rendered (``<h2 id=...>``, ``<h3 id=...>``), so each entry
links to the very id that nbconvert gave its heading.
"""
from __future__ import annotations

import html
import re

CONTENTS = "<!-- site-contents -->"  # where with_contents() puts the table of contents
HEADING = re.compile(r'<h([23]) id="([^"]+)">(.*?)<a class="anchor-link"', flags=re.S)

CSS = """
.site-nav { display: flex; flex-wrap: wrap; gap: 6px 18px; align-items: baseline; }
.site-nav .site-next { margin-left: auto; }
.site-course, .site-toc { font: 14px sans-serif; padding: 4px 16px; border-bottom: 1px solid #ddd; }
.site-course summary, .site-toc summary { cursor: pointer; color: #444; }
.site-course ol, .site-toc ol { margin: 4px 0 6px; }
.site-course [aria-current] { font-weight: bold; }
.site-toc li.site-h3 { margin-left: 1.5em; list-style-type: circle; }
"""


def _title(name: str, title: str) -> str:
    return html.escape(title or name)


def navigation(course: list[tuple[str, str]], i: int, contents: bool = True) -> str:
    """The links of page ``i`` among the ``course``'s pages ``[(name, title), ...]``, in order: all notebooks (the
    index), the previous and the next page; with ``contents``, also the list of every page and this page's
    table of contents (the ``CONTENTS`` mark, filled by ``with_contents``)."""
    links = ['<a class="site-index" href="index.html">All notebooks</a>']
    if i > 0:
        links.append(f'<a class="site-prev" rel="prev" href="{course[i - 1][0]}.html">&larr; '
                     f'{_title(*course[i - 1])}</a>')
    if i + 1 < len(course):
        links.append(f'<a class="site-next" rel="next" href="{course[i + 1][0]}.html">'
                     f'{_title(*course[i + 1])} &rarr;</a>')
    bar = f'<nav class="site-bar site-nav" aria-label="course">{" ".join(links)}</nav>'
    if not contents:
        return bar
    pages = "".join(f'<li><a href="{name}.html"{" aria-current=page" if j == i else ""}>{_title(name, title)}</a></li>'
                    for j, (name, title) in enumerate(course))
    listed = (f'<details class="site-course"><summary>The course: {len(course)} notebooks</summary><ol>{pages}</ol>'
              '</details>\n' if len(course) > 1 else "")
    return f"{bar}\n{listed}{CONTENTS}"


def with_contents(page: str) -> str:
    """``page`` with its table of contents (its h2 and h3 headings, linked) in place of the ``CONTENTS`` mark;
    without headings, the mark is simply removed."""
    entries = [f'<li class="site-h{level}"><a href="#{anchor}">{text.strip()}</a></li>'
               for level, anchor, text in HEADING.findall(page)]
    toc = (f'<details class="site-toc" open><summary>On this page</summary><ol>{"".join(entries)}</ol></details>'
           if entries else "")
    return page.replace(CONTENTS, toc, 1)
