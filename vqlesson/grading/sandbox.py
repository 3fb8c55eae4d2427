"""A sandbox per submission: running a student's notebook as hostile code.

Two levels, reported in every row of ``grades.csv`` (column ``isolation``):

``bwrap`` -- bubblewrap (``bwrap``, Debian package ``bubblewrap``) puts the run in new user,
PID, network, IPC, UTS and mount namespaces. Its file system holds only: the system's ``/usr``
(and ``/bin``, ``/lib*`` links), a few files of ``/etc``, the Python installation, the
``vqlesson`` package folder (not the rest of the repository), all read-only; a read-only
``/grader/in`` (the submission, the test inputs, the manifest); a writable ``/grader/out``; and
a fresh size-limited ``/tmp`` holding the working folder, ``HOME`` and ``TMPDIR``. No network
(only a loopback of its own). When bwrap's first process ends, the kernel kills every process
left in the PID namespace, daemons included.

``rlimits-only`` -- only when asked for (``--isolation none``): where bwrap is missing or
cannot create namespaces, :func:`detect_isolation` refuses (fails closed) unless told to grade
without it (:mod:`vqlesson.grading.isolation` says why and what to do). The same limits and
scrubbed environment, a fresh working folder, ``HOME`` and ``TMPDIR``, but the file system and
network are the grader's. Run as root, the grader still drops the run to an unprivileged user
of its own (files of other users are then protected by their permissions), and every process of
that user is killed afterwards.

Both: resource limits (address space, CPU seconds, tasks, file size, open files, no core
dumps) set by a tiny launcher before ``exec``; an allow-listed environment (:func:`scrubbed_env`);
captured output capped; after the run, whatever is left of it is killed: its process group,
every descendant, and every process of its dedicated user (or, without one, every process
whose working folder is inside the sandbox).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .isolation import (BWRAP, CANNOT_WORK, MISSING, RLIMITS_ONLY, SandboxUnavailable,
                        namespace_blockers, refusal_message)

IN_DIR, OUT_DIR, DATA_DIR = "/grader/in", "/grader/out", "/grader/data"  # inside bwrap
SANDBOX_TMP = "/tmp"
ALTERNATIVE_TMP = "/scratch"  # when the host's Python or package lies below /tmp
SANDBOX_UID_BASE = 1_500_000_000  # root only: one unused uid per concurrent sandbox
#: Each grading batch run as root reserves a block of this many uids (one per concurrent
#: sandbox) by locking a file, so two batches on one machine never share a user: a batch kills
#: its leftovers by user, and must never kill (or be signalled by) another batch's submissions.
UID_BLOCK = 4096
MAX_BATCHES = 256  # concurrent root grading batches on one machine
SANDBOX_USER = "student"
MAX_FILES = 100_000  # files a run may leave in the host folders it writes into
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf",
             "hosts", "ssl", "ca-certificates", "fonts", "mime.types", "alternatives")
SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
PASSTHROUGH_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "VQLESSON_DEVICE",
                   "CUDA_VISIBLE_DEVICES", "LANG", "TZ")
LAUNCHER = """\
import json, os, resource, sys
spec = json.loads(sys.argv[1])
for name, value in spec["limits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
if spec["uid"] is not None:
    os.setgroups([])
    os.setgid(spec["uid"])
    os.setuid(spec["uid"])
try:  # Linux: killed when the grader dies (set after setuid, which clears it)
    import ctypes, signal
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
except Exception:
    pass
os.umask(0o077)
os.execvp(sys.argv[2], sys.argv[2:])
"""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed run (every process in it).

    Attributes:
        memory_mb: address space per process in MiB (``RLIMIT_AS``); ``None``: unlimited
            (needed on CUDA, which reserves huge address ranges).
        cpu_s: CPU seconds per process (``RLIMIT_CPU``); ``None``: the time limit times the
            number of CPUs.
        tasks: processes and threads it may add (``RLIMIT_NPROC``; counted per user, so exact
            only when the grader runs as root and gives each sandbox its own user).
        file_mb: largest file it may write, in MiB (``RLIMIT_FSIZE``).
        disk_mb: size of its ``/tmp`` in MiB (bwrap only: a tmpfs).
        output_kb: captured stdout/stderr kept, in KiB (the first 3/4 and the last 1/4), and
            the outputs kept in the executed notebook.
        open_files: open file descriptors per process (``RLIMIT_NOFILE``).
    """

    memory_mb: int | None = 8192
    cpu_s: int | None = None
    tasks: int = 512
    file_mb: int = 1024
    disk_mb: int = 2048
    output_kb: int = 512
    open_files: int = 1024


class Isolation(NamedTuple):
    """The isolation a batch gets.

    Attributes:
        kind: :data:`BWRAP` or :data:`RLIMITS_ONLY`.
        detail: bwrap's version, or why it is not used; and the user the runs have.
        own_user: each sandbox runs as an unprivileged user of its own (the grader is root;
            without bwrap, only when that user can run the Python installation).
        executable: the ``bwrap`` the probe found and the sandboxes run (an absolute path).
        uid_base: the first uid of the block this batch reserved (:func:`reserved_users`).
    """

    kind: str
    detail: str
    own_user: bool = False
    executable: str = "bwrap"
    uid_base: int = SANDBOX_UID_BASE


class Layout(NamedTuple):
    """The host folders of one sandbox, and the paths the run sees.

    Attributes:
        root: the host folder holding everything (removed afterwards).
        inbox, outbox: host folders mounted read-only / writable.
        scratch: host folder of the working folder, ``HOME`` and ``TMPDIR`` (rlimits-only).
        in_path, out_path, work, home, tmp: those folders as the run sees them.
    """

    root: Path
    inbox: Path
    outbox: Path
    scratch: Path
    in_path: str
    out_path: str
    work: str
    home: str
    tmp: str


class SandboxRun(NamedTuple):
    """One sandboxed run.

    Attributes:
        returncode: the exit status of the sandbox (``None`` when killed at the time limit).
        timed_out: killed at the time limit.
        seconds: wall-clock seconds.
        output: its stdout and stderr, capped (a note says how much was dropped).
        killed: processes still alive after it ended (or at the limit), all killed.
        layout: its folders (:func:`sandboxed`), to read its outbox.
        stopped: why it was stopped before its end (too much written to disk), or None.
    """

    returncode: int | None
    timed_out: bool
    seconds: float
    output: str
    killed: int
    layout: Layout | None = None
    stopped: str | None = None


# --------------------------------------------------------------------------------------------
# Which isolation, which user
# --------------------------------------------------------------------------------------------
def is_root() -> bool:
    """Whether the grader runs as root (then sandboxes get users of their own)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def sandbox_uid(slot: int, isolation: Isolation) -> int | None:
    """The unprivileged user the sandbox of concurrent ``slot`` runs as, or ``None`` (the
    grader's own user)."""
    return isolation.uid_base + slot if isolation.own_user else None


@contextlib.contextmanager
def reserved_users(isolation: Isolation, jobs: int) -> Iterator[Isolation]:
    """Reserve a block of :data:`UID_BLOCK` sandbox users for one grading batch (root only):
    the first block whose lock file (in the temporary folder) this process can lock
    exclusively. Yields ``isolation`` with its ``uid_base`` set; the lock is held until the batch
    ends. Without own users, yields ``isolation`` unchanged.

    Raises:
        ValueError: ``jobs`` > :data:`UID_BLOCK`.
        RuntimeError: :data:`MAX_BATCHES` batches already grade as root on this machine.
    """
    if not isolation.own_user:
        yield isolation
        return
    if jobs > UID_BLOCK:
        raise ValueError(f"jobs must be <= {UID_BLOCK} (one sandbox user each), got {jobs}")
    folder = Path(tempfile.gettempdir())
    for block in range(MAX_BATCHES):
        handle = open(folder / f"vqlesson-grading-users-{block}.lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        try:
            yield isolation._replace(uid_base=SANDBOX_UID_BASE + block * UID_BLOCK)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        return
    raise RuntimeError(f"{MAX_BATCHES} grading batches already run as root on this machine; "
                       "wait for one to finish")


def package_dir() -> Path:
    """The folder of the ``vqlesson`` package (mounted alone, not its repository): the parent
    of this ``grading`` sub-package."""
    return Path(__file__).resolve().parent.parent


def python_dirs() -> list[Path]:
    """The folders the sandbox's Python needs: installation prefixes and site-packages."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                  str(Path(sys.executable).parent), os.path.realpath(sys.executable)}
    paths = sysconfig.get_paths()
    candidates |= {paths.get("purelib", ""), paths.get("platlib", ""), paths.get("stdlib", "")}
    found = []
    for candidate in sorted(filter(None, candidates)):
        path = Path(candidate)
        path = path if path.is_dir() else path.parent
        if path.is_dir() and not any(path == p or p in path.parents for p in found):
            found.append(path)
    return [p for p in found if not str(p).startswith("/usr/") and str(p) != "/usr"]


def sandbox_tmp() -> str:
    """The sandbox's own temporary folder (a fresh tmpfs): ``/tmp``, unless the Python
    installation or the package the sandbox mounts live below ``/tmp`` on the host (a checkout
    or virtual environment in ``/tmp``): then ``/scratch``, so that the tmpfs never lies over
    the mounted installation (runs in such a layout were killed mid-notebook)."""
    mounted = python_dirs() + [package_dir()]
    if any(path == Path(SANDBOX_TMP) or Path(SANDBOX_TMP) in path.parents for path in mounted):
        return ALTERNATIVE_TMP
    return SANDBOX_TMP


def make_layout(root: Path, kind: str, uid: int | None) -> Layout:
    """Create the sandbox's host folders under ``root`` (an empty folder) for ``kind``; owned
    by ``uid`` where they must be writable."""
    inbox, outbox, scratch = root / "in", root / "out", root / "scratch"
    for folder in (inbox, outbox, scratch, scratch / "work", scratch / "home", scratch / "tmp"):
        folder.mkdir(parents=True)
    root.chmod(0o711)
    for folder in (inbox, outbox, scratch):
        folder.chmod(0o755)
    if uid is not None:
        for folder in (outbox, scratch / "work", scratch / "home", scratch / "tmp"):
            os.chown(folder, uid, uid)
    if kind == BWRAP:
        inside, tmp = (os.getuid() if uid is None else uid), sandbox_tmp()
        home = f"{tmp}/home"
        (inbox / "passwd").write_text(f"{SANDBOX_USER}:x:{inside}:{inside}::{home}:/bin/sh\n")
        (inbox / "group").write_text(f"{SANDBOX_USER}:x:{inside}:\n")
        return Layout(root, inbox, outbox, scratch, IN_DIR, OUT_DIR, f"{tmp}/work", home, tmp)
    return Layout(root, inbox, outbox, scratch, str(inbox), str(outbox), str(scratch / "work"),
                  str(scratch / "home"), str(scratch / "tmp"))


def scrubbed_env(layout: Layout, extra: dict[str, str]) -> dict[str, str]:
    """The sandbox's whole environment: a fixed ``PATH``, the throwaway ``HOME``/``TMPDIR``,
    ``PYTHONPATH`` to the package, the few grader-independent variables of
    :data:`PASSTHROUGH_ENV`, and ``extra``; nothing else of the grader's environment."""
    env = {name: os.environ[name] for name in PASSTHROUGH_ENV if name in os.environ}
    env.update({
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": layout.home, "TMPDIR": layout.tmp, "USER": SANDBOX_USER,
        "LOGNAME": SANDBOX_USER, "PYTHONPATH": str(package_dir().parent),
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
        "JUPYTER_PLATFORM_DIRS": "1", "LC_ALL": "C.UTF-8",
    })
    env.update(extra)
    return env


def _bwrap_mounts(layout: Layout, gpu: bool, data_dir: Path | None) -> list[str]:
    """Read-only binds of the system, Python and the package; the inbox, outbox and data."""
    args, targets = ["--ro-bind", "/usr", "/usr"], ["/usr"]
    for name in SYSTEM_DIRS:
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
            targets.append(str(path))
    for name in ETC_FILES:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for path in python_dirs() + [package_dir()]:
        args += ["--ro-bind", str(path), str(path)]
        targets.append(str(path))
    args += ["--ro-bind-try", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]
    if gpu:
        for device in sorted(Path("/dev").glob("nvidia*")):
            args += ["--dev-bind", str(device), str(device)]
    if data_dir is not None:
        args += ["--ro-bind", str(data_dir), DATA_DIR]
    args += ["--ro-bind", str(layout.inbox / "passwd"), "/etc/passwd",
             "--ro-bind", str(layout.inbox / "group"), "/etc/group",
             "--ro-bind", str(layout.inbox), IN_DIR, "--bind", str(layout.outbox), OUT_DIR]
    return args + _traversable(targets + ["/etc/passwd", IN_DIR, OUT_DIR])


def _traversable(targets: list[str]) -> list[str]:
    """``--chmod 0755`` for the folders bwrap creates above mount points (it makes them 0700,
    which a sandbox user other than bwrap's own could not traverse)."""
    mounted = set(targets)
    parents = set()
    for target in targets:
        for parent in Path(target).parents:
            text = str(parent)
            if text != "/" and text not in mounted and not any(
                    text.startswith(m + "/") for m in mounted):
                parents.add(text)
    return [arg for parent in sorted(parents) for arg in ("--chmod", "0755", parent)]


def bwrap_command(layout: Layout, limits: SandboxLimits, command: list[str], uid: int | None,
                  gpu: bool = False, data_dir: Path | None = None) -> list[str]:
    """The ``bwrap`` command line that runs ``command`` (paths as seen inside) in ``layout``.

    Run by root (``uid`` given), bwrap needs no user namespace: it keeps only the capability to
    change user, and ``command`` starts with a launcher that becomes ``uid`` (no capabilities
    left, ``no_new_privs`` set). Otherwise the run is the grader's user in a user namespace.
    """
    if uid is not None:
        namespaces = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                      "--unshare-cgroup-try", "--cap-drop", "ALL", "--cap-add", "CAP_SETUID",
                      "--cap-add", "CAP_SETGID"]
        command = launcher_command({}, uid) + command
    else:
        namespaces = ["--unshare-all", "--cap-drop", "ALL"]
    return (["bwrap", *namespaces, "--die-with-parent", "--new-session", "--hostname", "sandbox",
             "--proc", "/proc", "--dev", "/dev",
             "--perms", "01777", "--size", str(limits.disk_mb * 2**20), "--tmpfs", layout.tmp,
             "--perms", "0777", "--dir", layout.work, "--perms", "0777", "--dir", layout.home]
            + _bwrap_mounts(layout, gpu, data_dir) + ["--chdir", layout.work, "--"] + command)


def launcher_command(limits: dict[str, int], uid: int | None) -> list[str]:
    """A Python launcher that sets the resource ``limits`` (``RLIMIT_*`` name -> value),
    becomes ``uid`` (if given) and ``exec``s the rest of its command line."""
    spec = json.dumps({"limits": limits, "uid": uid})
    return [sys.executable, "-I", "-S", "-c", LAUNCHER, spec]


def detect_isolation(require: str = "auto") -> Isolation:
    """Probe which isolation grading gets here; refuse without a working sandbox (fail closed).

    Args:
        require: ``"auto"`` or ``"bwrap"`` (the same since grading fails closed: bubblewrap, or
            :class:`SandboxUnavailable`; ``auto`` is kept so that existing commands work) or
            ``"none"`` (rlimits only, on purpose: the submissions can read the hidden tests and
            each other).

    Raises:
        SandboxUnavailable: ``require`` is ``"auto"`` or ``"bwrap"`` and bwrap is missing or
            cannot create its sandbox here; the message says which, why, how to get a
            sandbox and that ``--isolation none`` grades without one.
        ValueError: another ``require``.
    """
    if require not in ("auto", "bwrap", "none"):
        raise ValueError(f"isolation must be auto, bwrap or none, got {require!r}")
    if require != "none":
        executable = shutil.which("bwrap")
        cause, reason = _bwrap_problem(executable)
        if cause is not None:
            raise SandboxUnavailable(refusal_message(cause, reason, require))
        version = subprocess.run([executable, "--version"], capture_output=True, text=True,
                                 check=False)
        user = ("each run as an unprivileged user of its own" if is_root()
                else "runs as the grader's user in a user namespace")
        return Isolation(BWRAP, f"{version.stdout.strip() or 'bwrap'}; {user}", is_root(),
                         executable)
    reason = "bwrap not used (--isolation none)"
    if not is_root():
        return Isolation(RLIMITS_ONLY, f"{reason}; runs as the grader's user")
    if _own_user_runs_python():
        return Isolation(RLIMITS_ONLY, f"{reason}; each run as an unprivileged user of its own",
                         True)
    return Isolation(RLIMITS_ONLY, f"{reason}; runs AS ROOT: an unprivileged user cannot run "
                                   f"the Python installation ({sys.executable})")


def _own_user_runs_python() -> bool:
    with sandbox_tempdir("vqlesson-probe-") as tmp:
        run = sandboxed(tmp / "box", Isolation(RLIMITS_ONLY, "", True), 0, SandboxLimits(), 60,
                        [sys.executable, "-I", "-S", "-c", "print('python ok')"], {})
    return run.returncode == 0 and "python ok" in run.output


@contextlib.contextmanager
def sandbox_tempdir(prefix: str = "vqlesson-grade-") -> Iterator[Path]:
    """A temporary folder that a sandbox's user may traverse (mode 0711), removed afterwards
    with whatever the sandbox left in it."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        path.chmod(0o711)
        yield path
    finally:
        remove_tree(path)


def remove_tree(path: Path) -> None:
    """Remove a folder a sandbox wrote into, even where it made folders read-only."""
    for folder, dirs, _ in os.walk(path, followlinks=False):
        for name in dirs:
            try:
                child = Path(folder) / name
                if not child.is_symlink():
                    child.chmod(0o700)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)


def _bwrap_problem(executable: str | None) -> tuple[str | None, str]:
    """``(None, "")`` when a sandbox of bwrap ``executable`` runs Python here, else ``(cause,
    reason)``: :data:`MISSING` (no executable) or :data:`CANNOT_WORK` (bwrap's error and what
    on this machine forbids namespaces)."""
    if executable is None:
        return MISSING, "bubblewrap (bwrap) is not installed: no bwrap on PATH"
    with sandbox_tempdir("vqlesson-probe-") as tmp:
        run = sandboxed(tmp / "box", Isolation(BWRAP, "", is_root(), executable), 0,
                        SandboxLimits(), 60,
                        [sys.executable, "-I", "-S", "-c", "print('sandbox ok')"], {})
    if run.returncode == 0 and "sandbox ok" in run.output:
        return None, ""
    blockers = namespace_blockers()
    because = ("; ".join(blockers) if blockers
               else "user namespaces may be disabled, or a container forbids namespaces")
    return CANNOT_WORK, (f"bubblewrap ({executable}) is installed but cannot create a sandbox "
                         f"here: exit {run.returncode}, {run.output.strip()[-300:]!r}; {because}")


def check_python(isolation: Isolation, limits: SandboxLimits, gpu: bool = False,
                 data_dir: Path | None = None) -> float:
    """Check that the sandbox's Python runs under ``limits`` and finds what grading needs
    (nbclient, ipykernel, torch, numpy, vqlesson); returns the seconds it took.

    Raises:
        RuntimeError: it does not, with the sandbox's output (e.g. a Python installation the
            sandbox user cannot read, or a memory limit too low for torch).
    """
    code = ("import importlib.util as u\nmissing = [m for m in ('nbclient', 'ipykernel', 'torch', "
            "'numpy', 'vqlesson') if not u.find_spec(m)]\n"
            "print('missing: ' + ', '.join(missing) if missing else 'imports ok')")
    with sandbox_tempdir("vqlesson-probe-") as tmp:
        run = sandboxed(tmp / "box", isolation, 0, limits, 300, [sys.executable, "-c", code],
                        {}, gpu=gpu, data_dir=data_dir)
    if run.returncode != 0 or "imports ok" not in run.output:
        raise RuntimeError(f"the grading sandbox ({isolation.kind}) cannot import what it needs "
                           f"(exit {run.returncode}):\n{run.output.strip()[-2000:]}\nIs the "
                           "Python installation readable by other users? Is --memory-mb too low?")
    return run.seconds


def sandboxed(root: Path, isolation: Isolation, slot: int, limits: SandboxLimits,
              timeout_s: float, command, env_extra,
              gpu: bool = False, data_dir: Path | None = None,
              prepare=None) -> SandboxRun:
    """Run ``command`` in a fresh sandbox under ``root`` (an absent folder, created, left in
    place for the caller to read ``root/out`` and remove).

    Args:
        root: where the sandbox's host folders go.
        isolation: from :func:`detect_isolation`.
        slot: which concurrent sandbox this is (its user, when the grader is root).
        limits, timeout_s: resource and wall-clock limits.
        command: what to run, with paths as the sandbox sees them; a callable ``command``
            gets the :class:`Layout` and returns the list.
        env_extra: variables added to :func:`scrubbed_env` (or a callable: Layout -> them).
        gpu: expose the NVIDIA devices (bwrap).
        data_dir: a data folder mounted read-only at ``/grader/data`` (bwrap).
        prepare: called with the :class:`Layout` before the run (to fill ``layout.inbox``).
    """
    uid = sandbox_uid(slot, isolation)
    layout = make_layout(root, isolation.kind, uid)
    if prepare is not None:
        prepare(layout)
    argv = command(layout) if callable(command) else command
    env = scrubbed_env(layout, env_extra(layout) if callable(env_extra) else env_extra)
    if isolation.kind != BWRAP:
        run = run_confined(argv, env, timeout_s, limits, uid, uid, layout.scratch,
                           cwd=layout.scratch / "work", watched=(layout.outbox, layout.scratch))
        return run._replace(layout=layout)
    # bwrap starts as the grader (a launcher inside drops to uid); its options, which name
    # host paths, go through a file descriptor so that the run cannot read them in
    # /proc/1/cmdline (bwrap closes it before starting the command).
    full = bwrap_command(layout, limits, argv, uid, gpu, data_dir)
    split = full.index("--")
    options = layout.root / "bwrap.args"
    options.write_bytes(b"".join(a.encode() + b"\0" for a in full[1:split]))
    options.chmod(0o600)
    fd = os.open(options, os.O_RDONLY)
    try:
        run = run_confined([isolation.executable, "--args", str(fd)] + full[split:], env, timeout_s, limits,
                           uid, None, layout.scratch, cwd=layout.scratch / "work",
                           pass_fds=(fd,), watched=(layout.outbox,))
    finally:
        os.close(fd)
    return run._replace(layout=layout)


# --------------------------------------------------------------------------------------------
# Running and killing
# --------------------------------------------------------------------------------------------
def _rlimits(limits: SandboxLimits, timeout_s: float, uid: int | None) -> dict[str, int]:
    cpu = limits.cpu_s or int(timeout_s * (os.cpu_count() or 1)) + 60
    values = {"RLIMIT_CPU": cpu, "RLIMIT_NPROC": limits.tasks + _tasks_of(uid),
              "RLIMIT_FSIZE": limits.file_mb * 2**20, "RLIMIT_NOFILE": limits.open_files,
              "RLIMIT_CORE": 0}
    if limits.memory_mb is not None:
        values["RLIMIT_AS"] = limits.memory_mb * 2**20
    return values


def _tasks_of(uid: int | None) -> int:
    """Tasks (processes and threads) of the user a sandbox will run as, now."""
    import psutil

    uid = os.getuid() if uid is None else uid
    total = 0
    for process in psutil.process_iter(["uids", "num_threads"]):
        try:
            if process.info["uids"] and process.info["uids"].real == uid:
                total += process.info["num_threads"] or 1
        except psutil.Error:
            pass
    return total


class _CappedReader(threading.Thread):
    """Reads a pipe to its end, keeping the first 3/4 and the last 1/4 of ``cap`` bytes."""

    def __init__(self, pipe, cap: int):
        super().__init__(daemon=True)
        self.pipe, self.cap = pipe, cap
        self.head = bytearray()
        self.tail: collections.deque[bytes] = collections.deque()
        self.tail_bytes = self.dropped = 0

    def run(self) -> None:
        head_cap, tail_cap = self.cap * 3 // 4, self.cap // 4
        while chunk := self.pipe.read1(65536):
            room = head_cap - len(self.head)
            if room > 0:
                self.head += chunk[:room]
                chunk = chunk[room:]
            if chunk:
                self.tail.append(chunk)
                self.tail_bytes += len(chunk)
                while self.tail_bytes - len(self.tail[0]) >= tail_cap:
                    self.dropped += len(self.tail[0])
                    self.tail_bytes -= len(self.tail.popleft())

    def text(self) -> str:
        tail = b"".join(self.tail)
        extra = max(0, len(tail) - self.cap // 4)
        dropped, tail = self.dropped + extra, tail[extra:]
        note = f"\n[... {dropped} bytes of output dropped by the grader ...]\n" if dropped else ""
        return (bytes(self.head).decode("utf-8", "replace") + note
                + tail.decode("utf-8", "replace"))


def _alive(process) -> bool:
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_leftovers(process: subprocess.Popen, uid: int | None, scratch: Path | None) -> int:
    """Kill a sandbox's process group, its descendants and every process of its dedicated
    ``uid`` (or, without one, every process of ours whose working folder is in ``scratch``).

    Returns:
        How many processes were still alive and killed (the sandbox's own first process
        aside).
    """
    import psutil

    victims: dict[int, psutil.Process] = {}
    try:
        for child in psutil.Process(process.pid).children(recursive=True):
            victims[child.pid] = child
    except psutil.Error:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for _ in range(5):  # a process may fork while we look: look again
        for candidate in psutil.process_iter(["uids", "cwd"]):
            try:
                if candidate.pid == os.getpid() or candidate.pid in victims:
                    continue
                if uid is not None and candidate.info["uids"].real == uid:
                    victims[candidate.pid] = candidate
                elif uid is None and scratch is not None and candidate.info["cwd"] and \
                        Path(candidate.info["cwd"]).is_relative_to(scratch):
                    victims[candidate.pid] = candidate
            except (psutil.Error, TypeError, ValueError):
                pass
        alive = [v for v in victims.values() if _alive(v)]
        if not alive:
            break
        for victim in alive:
            try:
                victim.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=2)
    process.kill()
    process.wait()
    return sum(1 for pid in victims if pid != process.pid)


def run_confined(command: list[str], env: dict[str, str], timeout_s: float,
                 limits: SandboxLimits, uid: int | None, drop: int | None, scratch: Path | None,
                 cwd: Path | None = None, pass_fds: tuple[int, ...] = (),
                 watched: tuple[Path, ...] = ()) -> SandboxRun:
    """Run ``command`` under ``limits`` in a session of its own, for at most ``timeout_s``
    seconds; capture its output (capped); then kill whatever is left of it
    (:func:`kill_leftovers`).

    Args:
        uid: the user the run's processes end up as (``None``: the grader's).
        drop: the user the launcher becomes before ``exec`` (``None``: stay).
        scratch: the sandbox's host folder (without ``uid``, its processes are found by it).
        cwd: the working folder to start in.
        pass_fds: file descriptors the command inherits.
        watched: host folders the run writes into; it is stopped once they hold more than
            ``limits.disk_mb`` MiB or :data:`MAX_FILES` files (checked every second).
    """
    launcher = launcher_command(_rlimits(limits, timeout_s, uid), drop)
    start = time.perf_counter()
    process = subprocess.Popen(launcher + command, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True, cwd=cwd or scratch or "/",
                               pass_fds=pass_fds)
    reader = _CappedReader(process.stdout, limits.output_kb * 1024)
    reader.start()
    returncode, timed_out, stopped = None, False, None
    while returncode is None and not timed_out and stopped is None:
        try:
            returncode = process.wait(timeout=min(1.0, timeout_s))
        except subprocess.TimeoutExpired:
            timed_out = time.perf_counter() - start >= timeout_s
            stopped = _over_quota(watched, limits.disk_mb * 2**20)
    seconds = time.perf_counter() - start
    killed = kill_leftovers(process, uid, scratch)
    reader.join(timeout=5)
    process.stdout.close()
    return SandboxRun(returncode, timed_out, seconds, reader.text(), killed, stopped=stopped)


def _over_quota(folders: tuple[Path, ...], max_bytes: int) -> str | None:
    """Why ``folders`` hold too much (bytes or files), or None."""
    total = files = 0
    for folder in folders:
        for root, dirs, names in os.walk(folder, followlinks=False):
            files += len(names) + len(dirs)
            if files > MAX_FILES:
                return f"it wrote more than {MAX_FILES} files"
            for name in names:
                try:
                    total += os.lstat(os.path.join(root, name)).st_blocks * 512
                except OSError:
                    pass
            if total > max_bytes:
                return f"it wrote more than {max_bytes // 2**20} MiB to disk"
    return None
