"""The course as a static website: every notebook executed, rendered to HTML with its figures.

:func:`build_site` copies the notebooks into a temporary folder (the repository's notebooks stay
without outputs), executes them in order there with nbclient under one profile (``ci``, ``cpu``
or ``gpu``; ``VQLESSON_WIDGETS=0``, so every widget shows its static figure), renders each with
nbconvert's HTML exporter (JupyterLab's ``lab`` template, extended with a navigation bar that
names the profile and the date) and writes a landing page. Figures are embedded in the pages as
PNG data URIs, so the folder can be served or opened as it is. A notebook that raises stops the
build with an error that names it.

``python -m vqlesson build-site --profile cpu --out site/`` is the command.
"""

from __future__ import annotations

import datetime as dt
import html
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import vqlesson

from .notebooks import course_notebooks
from ..validate import check_choice

SITE_TITLE = "vqlesson: discrete generative models of skin lesions"

#: nbconvert template: JupyterLab's, with no require.js (no widgets are left to render) and a
#: navigation bar above and below each notebook.
PAGE_TEMPLATE = """\
{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{% block extra_css %}
<style>
.vq-nav { font-family: system-ui, sans-serif; font-size: 14px; padding: 8px 16px;
          background: #f3f5f7; border-bottom: 1px solid #d0d7de; }
.vq-nav a { margin-right: 1.2em; }
.vq-nav .vq-meta { color: #57606a; float: right; }
</style>
{% endblock extra_css %}
{%- block body_header -%}
{{ super() }}
{{ resources.vqlesson_nav }}
{%- endblock body_header -%}
{% block body_footer %}
{{ resources.vqlesson_nav }}
{{ super() }}
{% endblock body_footer %}
"""


class SitePage(NamedTuple):
    """One executed notebook in the site.

    Attributes:
        notebook: its file name, e.g. ``02_vqvae.ipynb``.
        title: the first heading of its first markdown cell (the file stem without one).
        html: the page written, ``OUT/NN_name.html``.
        seconds: wall-clock execution time in seconds.
        figures: how many image outputs (PNG, JPEG or SVG) the executed notebook holds.
    """

    notebook: str
    title: str
    html: Path
    seconds: float
    figures: int


class SiteBuild(NamedTuple):
    """What :func:`build_site` wrote.

    Attributes:
        out_dir: the site folder.
        index: its landing page, ``OUT/index.html``.
        pages: one :class:`SitePage` per notebook, in course order.
        profile: the profile the notebooks ran under.
        built_at: when the build finished (local time, ISO 8601 to the minute).
    """

    out_dir: Path
    index: Path
    pages: list[SitePage]
    profile: str
    built_at: str


def notebook_title(nb, fallback: str) -> str:
    """The text of the first markdown heading of a notebook (``fallback`` without one)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = re.search(r"^#+\s+(.+)$", cell.source, flags=re.MULTILINE)
            if match:
                return match.group(1).strip()
    return fallback


def count_figures(nb) -> int:
    """How many image outputs (``image/png``, ``image/jpeg``, ``image/svg+xml``) a notebook holds."""
    kinds = ("image/png", "image/jpeg", "image/svg+xml")
    return sum(1 for cell in nb.cells if cell.cell_type == "code"
               for output in cell.get("outputs", [])
               if any(kind in output.get("data", {}) for kind in kinds))


def kernel_environment(profile: str) -> dict[str, str]:
    """The environment the notebooks execute in: this one, with ``VQLESSON_PROFILE=profile``,
    ``VQLESSON_WIDGETS=0`` (static figures), matplotlib's inline backend (a non-interactive
    ``MPLBACKEND`` such as ``Agg``, which test runs set, would leave every figure out of the
    outputs) and this vqlesson first on ``PYTHONPATH``."""
    package_root = str(Path(vqlesson.__file__).resolve().parent.parent)
    env = dict(os.environ, VQLESSON_PROFILE=profile, VQLESSON_WIDGETS="0",
               MPLBACKEND="module://matplotlib_inline.backend_inline")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def execute_notebook(path: Path, profile: str, timeout_s: float = 1800.0):
    """Execute notebook ``path`` in its own folder under ``profile``.

    Args:
        path: the notebook (a copy: outputs are not written back).
        profile: ``ci``, ``cpu`` or ``gpu``.
        timeout_s: seconds one cell may run.

    Returns:
        The executed notebook (an ``nbformat`` node).

    Raises:
        RuntimeError: a cell raised or timed out; the message names the notebook and the error.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout_s, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute(env=kernel_environment(profile))
    except (CellExecutionError, CellTimeoutError) as error:
        raise RuntimeError(f"{path.name} failed under the {profile!r} profile; the site is not "
                           f"built. Run the notebook to see why:\n{error}") from None
    return nb


def _nav(pages: list[tuple[str, str]], i: int | None, profile: str, built_at: str) -> str:
    """The navigation bar: course home, previous and next notebook, profile and date."""
    links = ['<a href="index.html">Course home</a>']
    if i is not None and i > 0:
        links.append(f'<a href="{pages[i - 1][0]}">&larr; {html.escape(pages[i - 1][1])}</a>')
    if i is not None and i + 1 < len(pages):
        links.append(f'<a href="{pages[i + 1][0]}">{html.escape(pages[i + 1][1])} &rarr;</a>')
    meta = (f'<span class="vq-meta">executed under the <code>{html.escape(profile)}</code> '
            f'profile on {html.escape(built_at)}</span>')
    return f'<nav class="vq-nav">{meta}{" ".join(links)}</nav>'


def render_page(nb, name: str, nav: str) -> str:
    """One executed notebook as a standalone HTML page (figures embedded), with ``nav``."""
    import jinja2
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab",
                            extra_loaders=[jinja2.DictLoader({"vqlesson_page.j2": PAGE_TEMPLATE})])
    exporter.template_file = "vqlesson_page.j2"
    body, _ = exporter.from_notebook_node(
        nb, resources={"metadata": {"name": name}, "vqlesson_nav": nav})
    return body


def index_html(pages: list[SitePage], profile: str, built_at: str) -> str:
    """The landing page: the course, then one row per notebook (title, run time, figures)."""
    rows = "\n".join(
        f'<tr><td><a href="{p.html.name}">{html.escape(p.title)}</a></td>'
        f"<td><code>{html.escape(p.notebook)}</code></td>"
        f"<td>{p.seconds:.0f} s</td><td>{p.figures}</td></tr>" for p in pages)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(SITE_TITLE)}</title>
<style>body {{ font-family: system-ui, sans-serif; max-width: 60em; margin: 2em auto;
padding: 0 1em; line-height: 1.5 }} td, th {{ padding: 4px 12px; text-align: left }}
th {{ border-bottom: 1px solid #999 }}</style></head>
<body><h1>{html.escape(SITE_TITLE)}</h1>
<p>Train a VQ-VAE on dermoscopy images to encode and decode them, then an autoregressive
PixelCNN prior over its codes to generate new lesions. These are the course's notebooks, in
order, with the outputs they gave when executed under the <code>{html.escape(profile)}</code>
profile on {html.escape(built_at)} (vqlesson {html.escape(vqlesson.__version__)}): what running
them should look like. Your figures will differ in detail (other seeds, other hardware).</p>
<table><tr><th>notebook</th><th>file</th><th>execution time</th><th>figures</th></tr>
{rows}
</table></body></html>
"""


def build_site(notebooks_dir: str | Path, out_dir: str | Path, profile: str = "cpu",
               timeout_s: float = 1800.0,
               report: Callable[[str], None] | None = None) -> SiteBuild:
    """Execute every course notebook under ``profile`` and render the static site.

    The notebooks are copied into a temporary folder and executed there in course order (so
    later notebooks find the runs earlier ones wrote in that folder's ``runs/``); the
    repository's notebooks and ``runs/`` are not touched.

    Args:
        notebooks_dir: folder of the ``NN_name.ipynb`` notebooks.
        out_dir: the site folder; its ``index.html`` and ``NN_name.html`` are replaced.
        profile: ``ci`` (seconds, for tests), ``cpu`` (minutes) or ``gpu``.
        timeout_s: seconds one cell may run.
        report: called with one line of progress per notebook (e.g. ``print``).

    Returns:
        :class:`SiteBuild`.

    Raises:
        FileNotFoundError: no notebooks in ``notebooks_dir``.
        ValueError: an unknown profile.
        RuntimeError: a notebook raised or timed out (the message names it).
    """
    from ..profiles import PROFILES

    check_choice(profile, "profile", sorted(PROFILES))
    paths = course_notebooks(notebooks_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    executed = []
    with tempfile.TemporaryDirectory(prefix="vqlesson-site-") as tmp:
        work = Path(tmp) / "notebooks"
        work.mkdir()
        for path in paths:
            copy = Path(shutil.copy(path, work / path.name))
            start = time.perf_counter()
            nb = execute_notebook(copy, profile, timeout_s)
            seconds = time.perf_counter() - start
            executed.append((path, nb, seconds))
            if report:
                report(f"executed {path.name} under {profile} in {seconds:.0f} s")
    built_at = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    links = [(f"{p.stem}.html", notebook_title(nb, p.stem)) for p, nb, _ in executed]
    pages = []
    for i, (path, nb, seconds) in enumerate(executed):
        page = out / links[i][0]
        page.write_text(render_page(nb, path.stem, _nav(links, i, profile, built_at)),
                        encoding="utf-8")
        pages.append(SitePage(path.name, links[i][1], page, seconds, count_figures(nb)))
    index = out / "index.html"
    index.write_text(index_html(pages, profile, built_at), encoding="utf-8")
    if report:
        report(f"wrote {index} and {len(pages)} notebook pages")
    return SiteBuild(out, index, pages, profile, built_at)
