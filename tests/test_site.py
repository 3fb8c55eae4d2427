"""The course as a website (vqlesson.course.site), checked in a real browser: headless Chromium loads
every page from a local server and each notebook page must show its figures, decoded, and no
error output. The site is built once, under the ``ci`` profile (the notebooks execute: about
1-2 minutes). Also the gallery (vqlesson.course.gallery) and the two commands."""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import threading
from pathlib import Path

import nbformat
import pytest
from PIL import Image

from vqlesson.course import site
from vqlesson.cli import build_parser, main
from vqlesson.course.gallery import GalleryConfig, make_gallery

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str | None:
    return next((path for name in ("chromium", "chromium-browser")
                 if (path := shutil.which(name))), None)


# --------------------------------------------------------------------------------------------
# Parts, without executing the course
# --------------------------------------------------------------------------------------------
def test_titles_figures_and_errors_for_bad_input(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 02 · Vector quantisation\n\ntext"),
        nbformat.v4.new_code_cell("x", outputs=[
            nbformat.v4.new_output("display_data", data={"image/png": "iVBOR", "text/plain": "F"}),
            nbformat.v4.new_output("stream", text="hello")])])
    assert site.notebook_title(nb, "fallback") == "02 · Vector quantisation"
    assert site.notebook_title(nbformat.v4.new_notebook(), "fallback") == "fallback"
    assert site.count_figures(nb) == 1
    with pytest.raises(FileNotFoundError, match="no course notebooks"):
        site.build_site(tmp_path, tmp_path / "site", "ci")
    with pytest.raises(ValueError, match="profile must be one of"):
        site.build_site(NOTEBOOKS, tmp_path / "site", "laptop")


def test_the_kernel_gets_static_widgets_the_profile_and_this_vqlesson(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.setenv("MPLBACKEND", "Agg")  # as the root conftest sets it: no figure outputs
    env = site.kernel_environment("cpu")
    assert env["VQLESSON_WIDGETS"] == "0" and env["VQLESSON_PROFILE"] == "cpu"
    assert env["MPLBACKEND"] == "module://matplotlib_inline.backend_inline"
    assert env["PYTHONPATH"].split(":") == [str(ROOT), "/elsewhere"]


def test_a_failing_notebook_stops_the_build_and_is_named(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise KeyError('boom')")])
    nbformat.write(nb, tmp_path / "01_broken.ipynb")
    with pytest.raises(RuntimeError, match="01_broken.ipynb failed under the 'ci' profile"):
        site.build_site(tmp_path, tmp_path / "site", "ci")
    assert not (tmp_path / "site" / "index.html").exists()


def test_the_commands_are_registered():
    args = build_parser().parse_args(["build-site", "--profile", "ci", "--out", "s"])
    assert (args.profile, args.out, args.notebooks, args.timeout) == ("ci", "s", "notebooks", 1800)
    args = build_parser().parse_args(["gallery", "--run", "runs/course"])
    assert (args.run, args.out, args.width) == ("runs/course", "docs/gallery", None)


def _fake_run(folder: Path, missing: str | None = None) -> Path:
    folder.mkdir()
    names = ["reconstructions.png", "codebook_usage.png", "samples.png", "analysis_diversity.png"]
    for i, name in enumerate(n for n in names if n != missing):
        Image.new("RGB", (1600, 800), (40 * i, 90, 160)).save(folder / name)
    (folder / "metrics.json").write_text(json.dumps(
        {"profile": "cpu", "data": "synthetic: 1200 train images at 64 px"}))
    return folder


def test_the_gallery_resizes_the_run_s_figures_and_says_where_they_come_from(tmp_path, capsys):
    run = _fake_run(tmp_path / "run")
    made = make_gallery(run, tmp_path / "gallery", GalleryConfig(max_width=400))
    assert sorted(made.images) == ["codebook_usage", "diversity", "reconstructions", "samples"]
    for path in made.images.values():
        with Image.open(path) as image:
            assert image.width == 400 and image.height == 200
    assert made.total_bytes == sum(p.stat().st_size for p in made.images.values())
    text = made.readme.read_text()
    assert "`cpu` profile" in text and "synthetic: 1200 train images" in text
    assert all(f"({p.name})" in text for p in made.images.values())
    assert main(["gallery", "--run", str(run), "--out", str(tmp_path / "g2")]) == 0
    assert "wrote 4 images" in capsys.readouterr().out


def test_the_gallery_names_the_prior_temperature_and_realism_figures(tmp_path):
    run = _fake_run(tmp_path / "run")
    (run / "prior_metrics.json").write_text(json.dumps({"priors": {"codes": {
        "model": "TransformerPrior", "epochs": 20, "best_epoch": 19,
        "test": {"bits_per_code": 3.05}}}}))
    (run / "temperature.json").write_text(json.dumps({"temperature": 0.9, "chosen": True}))
    (run / "analysis.json").write_text(json.dumps({
        "two_sample": {"samples vs reconstructions": {"accuracy": 0.61, "n": 128}},
        "vignette": {"samples": {"outside": 0.6, "inside": 0.02},
                     "real": {"outside": 0.58, "inside": 0.016}},
        "lesion_found": {"samples": 0.97}, "realism": {"wasserstein": {"border": 0.8, "score": 0.6}},
        "reference_diversity": {"code_hamming": 0.968},
        "temperatures": [{"temperature": 0.9, "near_copy_fraction": 0.0, "code_hamming": 0.95}]}))
    text = make_gallery(run, tmp_path / "gallery").readme.read_text()
    assert "TransformerPrior, 20 epochs (best 19), test NLL 3.050 bits per code" in text
    assert "sampling temperature: 0.9 (chosen on the validation split" in text
    assert "two-sample test accuracy 0.610" in text and "lesion found in 97%" in text
    assert "border 0.80 and TDS 0.60" in text and "code diversity 0.950 (real test images 0.968)" in text


def test_the_gallery_names_a_missing_figure_and_writes_nothing(tmp_path):
    run = _fake_run(tmp_path / "run", missing="samples.png")
    with pytest.raises(FileNotFoundError, match=r"samples\.png not found.*pipeline --out"):
        make_gallery(run, tmp_path / "gallery")
    assert not (tmp_path / "gallery").exists()


# --------------------------------------------------------------------------------------------
# The real site, in Chromium
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    before = {p: p.read_bytes() for p in NOTEBOOKS.glob("*.ipynb")}
    made = site.build_site(NOTEBOOKS, tmp_path_factory.mktemp("site"), "ci")
    assert {p: p.read_bytes() for p in NOTEBOOKS.glob("*.ipynb")} == before, \
        "building the site changed the repository's notebooks"
    return made


@pytest.fixture(scope="module")
def browser(built):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[site]'")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run does it)")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(built.out_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with sync_api.sync_playwright() as playwright:
        chrome = playwright.chromium.launch(executable_path=chromium, headless=True,
                                            args=CHROMIUM_FLAGS)
        yield chrome.new_page(), f"http://127.0.0.1:{server.server_port}"
        chrome.close()
    server.shutdown()


def test_the_site_has_every_notebook_in_order_with_profile_and_date(built):
    names = [p.name for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))]
    assert [p.notebook for p in built.pages] == names and built.profile == "ci"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", built.built_at)
    for page in built.pages:
        assert page.html.is_file() and page.figures > 0, page.notebook


def test_chromium_shows_the_landing_page_with_a_link_to_every_notebook(built, browser):
    page, url = browser
    page.goto(f"{url}/index.html", wait_until="load")
    text = page.inner_text("body")
    assert "ci" in text and built.built_at in text
    links = page.eval_on_selector_all("table a", "els => els.map(e => e.getAttribute('href'))")
    assert links == [p.html.name for p in built.pages]


def test_chromium_shows_every_notebook_s_figures_and_no_error_output(built, browser):
    page, url = browser
    for made in built.pages:
        response = page.goto(f"{url}/{made.html.name}", wait_until="load")
        assert response is not None and response.status == 200, made.notebook
        images = page.evaluate("Array.from(document.querySelectorAll('.jp-OutputArea-output img'))"
                               ".map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(images) >= made.figures, made.notebook
        assert all(done and w >= 50 and h >= 50 for done, w, h in images), (made.notebook, images)
        outputs = "\n".join(page.eval_on_selector_all(
            ".jp-OutputArea-output", "els => els.map(e => e.innerText)"))
        assert "Traceback" not in outputs, made.notebook
        assert not re.search(r"^\w*(Error|Exception)\b.*:", outputs, re.MULTILINE), made.notebook
        assert "VBox(" not in outputs, f"{made.notebook}: a widget rendered as text"
        assert "executed under the ci profile" in page.inner_text("nav"), made.notebook
