"""Inside the sandbox: execute one submitted notebook, then collect its functions' outputs.

Run by the grader as a script, inside the sandbox (:mod:`vqlesson.grading.sandbox`)::

    python -I .../vqlesson/grading/runner.py IN_DIR OUT_DIR WORK_DIR TIMEOUT_S OUTPUT_KB

It imports neither torch nor vqlesson (the notebook's kernel does). It executes
``IN_DIR/submission.ipynb`` with nbclient in a fresh kernel whose working folder is
``WORK_DIR``; a cell that raises does not stop the run. Then it executes one more cell in the
same kernel, :func:`vqlesson.grading.io.collect_outputs` on ``IN_DIR/exercises.json``, which
calls each test's student function and writes its outputs as data into ``OUT_DIR/outputs/``.
It writes ``OUT_DIR/executed.ipynb`` (outputs beyond ``OUTPUT_KB`` dropped) and
``OUT_DIR/run.json`` (``cell_errors``, ``failure``, ``dropped_bytes``).

Everything here runs beside student code and may be tampered with by it: the grader trusts
none of these files beyond their size and format.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

KERNEL_NAME = "vqlesson-grader"
GRADER_CELL_TAG = "vqlesson-grader"
COLLECT_SOURCE = ("import vqlesson.grading.io as _vqlesson_grading_io\n"
                  "_vqlesson_grading_io.collect_outputs({manifest!r}, globals())")
MAX_TRACEBACK = 4000  # characters of an error output's traceback kept


def _text_size(value) -> int:
    """Characters in the strings of a message's content (what storing it would cost)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_text_size(v) for v in value.values())
    if isinstance(value, list):
        return sum(_text_size(v) for v in value)
    return 8


class CappedClient(NotebookClient):
    """An nbclient that keeps at most ``cap`` characters of outputs in the notebook (errors
    always, their tracebacks shortened) and counts what it dropped."""

    def __init__(self, nb, cap: int, **kwargs):
        super().__init__(nb, **kwargs)
        self.cap, self.kept, self.dropped = cap, 0, 0
        self.cells_with_drops: set[int] = set()

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        if msg.get("msg_type") == "error":
            traceback = "\n".join(content.get("traceback", []))
            content["traceback"] = [traceback[-MAX_TRACEBACK:]]
            content["evalue"] = str(content.get("evalue", ""))[:MAX_TRACEBACK]
            return super().output(outs, msg, display_id, cell_index)
        size = _text_size(content)
        if self.kept + size > self.cap:
            self.dropped += size
            self.cells_with_drops.add(cell_index)
            return None
        self.kept += size
        return super().output(outs, msg, display_id, cell_index)


def _write_kernelspec(home: Path) -> Path:
    """A kernelspec running this Python's ipykernel; returns the folder for ``JUPYTER_PATH``."""
    folder = home / ".grader-jupyter"
    spec = folder / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "vqlesson grader", "language": "python"}))
    return folder


def cell_errors(nb) -> list[str]:
    """``"Name: value (in the cell starting `...`)"`` for each error output of the notebook."""
    errors = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                first = cell.source.strip().split("\n", 1)[0][:60]
                where = ("the grader's call of your functions" if GRADER_CELL_TAG in
                         cell.metadata.get("tags", []) else f"the cell starting `{first}`")
                errors.append(f"{output.get('ename')}: {str(output.get('evalue'))[:200]} "
                              f"(in {where})")
    return errors


def run(in_dir: Path, out_dir: Path, work: Path, timeout_s: float, output_kb: int) -> dict:
    """Execute the submission and the collecting cell; write the executed notebook; return
    the run's summary (also written as ``run.json``)."""
    nb = nbformat.read(in_dir / "submission.ipynb", as_version=4)
    collect = nbformat.v4.new_code_cell(COLLECT_SOURCE.format(
        manifest=str(in_dir / "exercises.json")))
    collect.metadata["tags"] = [GRADER_CELL_TAG]
    nb.cells.append(collect)
    os.environ["JUPYTER_PATH"] = str(_write_kernelspec(Path(os.environ.get("HOME", work))))
    client = CappedClient(nb, output_kb * 1024, timeout=timeout_s, kernel_name=KERNEL_NAME,
                          allow_errors=True, shutdown_kernel="immediate",
                          resources={"metadata": {"path": str(work)}})
    failure = None
    try:
        client.execute()
    except DeadKernelError as error:
        failure = f"the kernel died ({str(error)[:200]})"
    except CellTimeoutError:
        failure = f"a cell ran past the time limit of {timeout_s:g} s"
    except Exception as error:  # reported, never raised: the grader reads run.json
        failure = f"{type(error).__name__}: {str(error)[:300]}"
    for index in sorted(client.cells_with_drops):
        nb.cells[index].outputs.append(nbformat.v4.new_output(
            "stream", name="stderr", text="[output dropped by the grader: over its limit]\n"))
    summary = {"cell_errors": cell_errors(nb), "failure": failure,
               "dropped_bytes": client.dropped}
    (out_dir / "executed.ipynb").write_text(nbformat.writes(nb))
    (out_dir / "run.json").write_text(json.dumps(summary))
    return summary


if __name__ == "__main__":
    in_dir, out_dir, work, timeout_s, output_kb = sys.argv[1:6]
    run(Path(in_dir), Path(out_dir), Path(work), float(timeout_s), int(output_kb))
