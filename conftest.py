"""Repository-wide pytest set-up: the suite (and the notebook kernels nbval starts, which inherit
this environment) runs under the small ``ci`` profile unless VQLESSON_PROFILE says otherwise."""

import os

os.environ.setdefault("VQLESSON_PROFILE", "ci")
os.environ.setdefault("MPLBACKEND", "Agg")


# Each notebook's total run time, so the cost of the suite is known (printed at the end).
_NOTEBOOK_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::", 1)[0]
    if path.endswith(".ipynb"):
        _NOTEBOOK_SECONDS[path] = _NOTEBOOK_SECONDS.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if _NOTEBOOK_SECONDS:
        terminalreporter.section("notebook run times (nbval)")
        for path, seconds in sorted(_NOTEBOOK_SECONDS.items()):
            terminalreporter.write_line(f"{seconds:8.1f} s  {path}")
