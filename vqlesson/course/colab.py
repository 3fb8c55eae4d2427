"""The Colab set-up cell of every notebook and the README's "Open in Colab" links, both built from
:data:`REPO_URL` (change it and run ``python -m vqlesson sync-notebooks`` and ``colab-links`` to
move the course to another repository)."""

from __future__ import annotations

import re
from pathlib import Path

from .notebooks import NOTEBOOKS_DIR, course_notebooks


REPO_URL = "https://github.com/vqlesson/vqlesson"
BRANCH = "main"


# --------------------------------------------------------------------------------------------
# The Colab set-up cell and the Colab links
# --------------------------------------------------------------------------------------------
#: Shown collapsed (Colab's form view shows the ``#@title`` line; Jupyter hides the source), under
#: the sentence of :data:`COLAB_SENTENCE` in the run-time cell above it.
COLAB_CELL_METADATA = {"cellView": "form", "jupyter": {"source_hidden": True}}
COLAB_SENTENCE = ("The next cell is the set-up, shown collapsed: in Colab it installs the course "
                  "and picks the `gpu` or `cpu` profile from the runtime; elsewhere it does "
                  "nothing heavy. Run it; there is nothing to read in it.")
COLAB_CELL_TEMPLATE = '''\
#@title Set-up: installs the course in Colab and picks the profile (elsewhere: nothing heavy)
# In Colab: install the course, optionally fetch ISIC 2016 and keep runs/ and data/ on
# Google Drive, and pick the profile from the runtime. Elsewhere this cell does nothing heavy.
REPO_URL = "{repo_url}"  # written by `python -m vqlesson sync-notebooks`
BRANCH = "{branch}"
DOWNLOAD_ISIC = False       # True: fetch ISIC 2016 (about 830 MB) with data_download.sh
KEEP_RUNS_ON_DRIVE = False  # True: runs/ and data/ on Google Drive: a disconnected session
                            # resumes its training, and ISIC (and its resized cache) stays
import importlib, os, subprocess, sys
if "google.colab" in sys.modules:
    ROOT = "/content/vqlesson"
    if not os.path.isdir(ROOT):
        subprocess.run(["git", "clone", "--depth", "1", "--branch", BRANCH, REPO_URL, ROOT],
                       check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", ROOT], check=True)
    importlib.invalidate_caches()
    os.chdir(ROOT + "/notebooks")
    for name in ("runs", "data") if KEEP_RUNS_ON_DRIVE else ():
        here, kept = ROOT + "/" + name, "/content/drive/MyDrive/vqlesson/" + name
        if not os.path.islink(here):
            from google.colab import drive
            if not os.path.isdir("/content/drive/MyDrive"):
                drive.mount("/content/drive")
            os.makedirs(kept, exist_ok=True)
            if os.path.isdir(here):
                os.rename(here, here + ".local")
            os.symlink(kept, here)
    os.environ.setdefault("VQLESSON_DATA_DIR", ROOT + "/data")
    if DOWNLOAD_ISIC:
        subprocess.run(["bash", "../data_download.sh", ROOT + "/data/isic2016"], check=True)
    import torch
    os.environ.setdefault("VQLESSON_PROFILE", "gpu" if torch.cuda.is_available() else "cpu")
    print("Colab set-up done: profile", os.environ["VQLESSON_PROFILE"])
    if not torch.cuda.is_available():
        print("WARNING: this Colab session runs on a CPU runtime, so the small `cpu` profile "
              "is used and training is slow. Choose Runtime > Change runtime type > a GPU "
              "(e.g. T4), then run the notebook again from the top.")'''


def colab_cell_source(repo_url: str = REPO_URL, branch: str = BRANCH) -> str:
    """The source of the Colab set-up cell, the first code cell of every notebook.

    It cannot import vqlesson (it installs it), so the URL and branch are written into it.
    """
    return COLAB_CELL_TEMPLATE.format(repo_url=repo_url, branch=branch)


def _github_path(repo_url: str) -> str:
    match = re.fullmatch(r"https://github\.com/([^/\s]+)/([^/\s]+?)(?:\.git)?/?", repo_url)
    if match is None:
        raise ValueError(f"REPO_URL must be a GitHub repository URL such as "
                         f"https://github.com/OWNER/REPO, got {repo_url!r}")
    return f"{match.group(1)}/{match.group(2)}"


def colab_url(notebook: str, repo_url: str = REPO_URL, branch: str = BRANCH) -> str:
    """The "Open in Colab" URL of ``notebook`` (a file name such as ``02_vqvae.ipynb``)."""
    return (f"https://colab.research.google.com/github/{_github_path(repo_url)}/blob/{branch}/"
            f"{NOTEBOOKS_DIR}/{notebook}")


def colab_links_markdown(notebooks_dir: str | Path = NOTEBOOKS_DIR, repo_url: str = REPO_URL
                         ) -> str:
    """A markdown table with one "Open in Colab" link per notebook, for the README."""
    rows = ["| notebook | Colab |", "|---|---|"]
    for path in course_notebooks(notebooks_dir):
        badge = "![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)"
        rows.append(f"| `{path.name}` | [{badge}]({colab_url(path.name, repo_url)}) |")
    return "\n".join(rows)


