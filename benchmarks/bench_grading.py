"""What grading one full notebook costs: the old path against the sandboxed one.

The submission is the instructor's version of a course notebook (full marks), from a fresh
``student-version`` build. Three ways to grade it, each run ``--repeats`` times, alternating:

- *old*: otter-grader's non-container runner in its own process and temporary folder (``otter
  run``: the notebook and then the tests run in the student's kernel), as ``python -m vqlesson
  grade`` did before the sandbox;
- *new, bwrap*: ``vqlesson.grading.grader`` with bubblewrap (skipped where it cannot run);
- *new, rlimits-only*: the same with ``isolation="none"``.

For the new paths it prints the seconds per submission (the CSV's ``seconds``: the sandbox and
the checks) and their split (from the log's last line: the sandbox, i.e. kernel start, the
notebook and the collection of outputs; the checks, i.e. the separate judge process), and the
one-off set-up of a batch (probing the isolation). Prints figures; asserts nothing.

Usage: VQLESSON_PROFILE=ci python benchmarks/bench_grading.py [--notebook 02_vqvae]
                                                              [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from vqlesson import course
from vqlesson.grading import GradeSettings, SandboxUnavailable, grade
from vqlesson.grading.sandbox import detect_isolation

ROOT = Path(__file__).resolve().parents[1]
OLD_RUNNER = """\
import sys
from otter.run import main
results = main(sys.argv[1], autograder=sys.argv[2], output_dir=None, no_logo=True)
print("SCORE", results.total, results.possible)
"""


def old_path(submission: Path, zip_path: Path, profile: str) -> tuple[float, str]:
    """Seconds and score of the pre-sandbox grading: ``otter run`` in a worker process."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, VQLESSON_PROFILE=profile, VQLESSON_GRADING="1",
                   VQLESSON_WIDGETS="0", MPLBACKEND="Agg", TMPDIR=tmp,
                   VQLESSON_METRICS_FILE=str(Path(tmp) / "metrics.json"))
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", OLD_RUNNER, str(submission), str(zip_path)],
                              cwd=tmp, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    score = re.findall(r"SCORE (\S+) (\S+)", done.stdout)
    return seconds, (f"{score[-1][0]} / {score[-1][1]}" if score else
                     f"failed: {done.stderr.strip()[-200:]}")


def new_path(folder: Path, zip_path: Path, profile: str, isolation: str, out: Path) -> dict:
    """Seconds of the sandboxed grading of the one submission in ``folder``."""
    start = time.perf_counter()
    report = grade(folder, zip_path, out_csv=out / "grades.csv", profile=profile,
                   timeout_s=1800, regrade=True, settings=GradeSettings(isolation=isolation))
    total = time.perf_counter() - start
    row = report.results[0]
    log = (report.logs_dir / f"{Path(row.submission).stem}.log").read_text()
    split = re.findall(r"sandbox ([\d.]+) s, checks ([\d.]+) s", log)
    sandbox, checks = (float(v) for v in split[-1]) if split else (float("nan"),) * 2
    return {"seconds": row.seconds, "sandbox": sandbox, "checks": checks,
            "setup": total - row.seconds, "score": f"{row.score:g} / {row.possible:g}"
            if row.score is not None else row.status, "isolation": row.isolation}


def _bwrap_works() -> bool:
    try:
        detect_isolation("bwrap")
    except SandboxUnavailable as error:
        print(f"bwrap path skipped: {str(error).splitlines()[0]}")
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebook", default="02_vqvae")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile", default=os.environ.get("VQLESSON_PROFILE", "ci"))
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; Python {platform.python_version()}; profile {args.profile}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        made = course.make_student_version(ROOT / "notebooks", tmp / "dist", only=[args.notebook])
        zip_path = made.autograders[args.notebook]
        folder = tmp / "submissions"
        folder.mkdir()
        submission = folder / "instructor.ipynb"
        nbformat.write(nbformat.read(made.build_dir / args.notebook / "autograder" /
                                     f"{args.notebook}.ipynb", as_version=4), submission)
        kinds = ["none"] + (["bwrap"] if _bwrap_works() else [])
        runs: dict[str, list] = {"old": [], **{k: [] for k in kinds}}
        for repeat in range(args.repeats):
            runs["old"].append(old_path(submission, zip_path, args.profile))
            print(f"old path, run {repeat + 1}: {runs['old'][-1][0]:.1f} s, score "
                  f"{runs['old'][-1][1]}", flush=True)
            for kind in kinds:
                runs[kind].append(new_path(folder, zip_path, args.profile, kind, tmp / kind))
                r = runs[kind][-1]
                print(f"new path ({r['isolation']}), run {repeat + 1}: {r['seconds']:.1f} s "
                      f"per submission (sandbox {r['sandbox']:.1f} s, checks {r['checks']:.1f} "
                      f"s), batch set-up {r['setup']:.1f} s, score {r['score']}", flush=True)
    old = statistics.median(s for s, _ in runs["old"])
    print(f"\n{args.notebook}, median of {args.repeats}:")
    print(f"  old path (otter run in the worker): {old:.1f} s per submission")
    for kind in kinds:
        new = statistics.median(r["seconds"] for r in runs[kind])
        print(f"  new path ({runs[kind][0]['isolation']}): {new:.1f} s per submission "
              f"({(new - old) / old * 100:+.0f} % against the old path; sandbox "
              f"{statistics.median(r['sandbox'] for r in runs[kind]):.1f} s, checks "
              f"{statistics.median(r['checks'] for r in runs[kind]):.1f} s)")


if __name__ == "__main__":
    main()
