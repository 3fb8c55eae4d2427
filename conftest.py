"""Repository-wide pytest set-up: the suite (and the notebook kernels nbval starts, which inherit
this environment) runs under the small ``ci`` profile unless VQLESSON_PROFILE says otherwise."""

import os

os.environ.setdefault("VQLESSON_PROFILE", "ci")
os.environ.setdefault("MPLBACKEND", "Agg")
