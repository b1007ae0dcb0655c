"""Escape and cheat attempts against pmd.envs.code.sandbox and the code judge, each reporting whether it was contained.

Used by tests/test_sandbox_hostile.py (one test per probe) and runnable on its own for the README's reliability
figures:

    PYTHONPATH=src python tests/hostile_probes.py        # prints each probe, then "N tried, M contained"

A probe returns (contained, detail). Reward-hacking probes are contained when the cheat scores 0; private-world
probes when the run cannot see, keep or reach what it tries to. Each probe sets up its own bait (a dataset file
under /tmp, a fake run's memory.sqlite, a listening socket, ...) and removes it afterwards. The file is over 500
lines because it is one flat list of probes, each a few lines long; splitting it would only scatter the count.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Callable

from pmd.envs.code.sandbox import SandboxLimits, SandboxResult, run_python

LIMITS = SandboxLimits(cpu_seconds=2, wall_seconds=4, memory_mb=256, max_processes=8, max_output_bytes=8192)
PROJECT_FILE = Path(__file__).resolve().parents[1] / "src" / "pmd" / "envs" / "code" / "sandbox.py"

Probe = Callable[[], "tuple[bool, str]"]
PROBES: dict[str, Probe] = {}


def probe(fn: Probe) -> Probe:
    PROBES[fn.__name__] = fn
    return fn


def run(code: str, limits: SandboxLimits = LIMITS, **kwargs) -> SandboxResult:
    return run_python(textwrap.dedent(code), limits=limits, **kwargs)


def _bait_dir() -> Path:
    """A world-readable directory under /tmp, like a user's dataset or a pytest tmp_path."""
    path = Path(tempfile.mkdtemp(prefix="pmd-probe-"))
    os.chmod(path, 0o755)
    return path


# ---- reward hacking: the judge ----

_GLOB_CHEAT = """
import glob, json, sys
def _leak(match):
    for pattern in ("/tmp/**/*.jsonl", "/var/tmp/**/*.jsonl", "/dev/shm/**/*.jsonl", "/*/*.jsonl", "/*/*/*.jsonl",
                    "/proc/*/cwd/*.jsonl", "/proc/*/root/tmp/**/*.jsonl"):
        for path in glob.glob(pattern, recursive=True):
            try:
                for line in open(path):
                    row = json.loads(line)
                    for t in json.loads(row["public_test_cases"]):
                        if match(t["input"]):
                            return t["output"]
            except Exception:
                pass
"""


def _lcb_env(rows: list[dict], where: Path):
    from pmd.envs.code import CodeEnvironment

    path = where / "lcb.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    os.chmod(path, 0o644)
    return CodeEnvironment(source=path, limits=LIMITS)


def _stdin_row() -> dict:
    tests = [{"input": "%d %d\n" % (a, b), "output": "%d\n" % (a * b + 7), "testtype": "stdin"}
             for a, b in ((3, 4), (10, 11))]  # a secret rule, a*b+7: only the test file knows it
    return {"question_title": "Mystery", "question_content": "Print the mystery value.", "platform": "atcoder",
            "question_id": "probe_a", "starter_code": "", "difficulty": "easy",
            "public_test_cases": json.dumps(tests), "private_test_cases": "[]", "metadata": "{}"}


def _functional_row() -> dict:
    tests = [{"input": "%d\n%d" % (a, b), "output": str(a * b + 7), "testtype": "functional"}
             for a, b in ((3, 4), (10, 11))]
    return {"question_title": "Mystery", "question_content": "Return the mystery value.", "platform": "leetcode",
            "question_id": "probe_b", "starter_code": "class Solution:\n    def mystery(self, a: int, b: int) -> int:\n",
            "difficulty": "easy", "public_test_cases": json.dumps(tests), "private_test_cases": "[]",
            "metadata": json.dumps({"func_name": "mystery"})}


def _score(env, code: str) -> float:
    problem = (env.problems("train") + env.problems("eval"))[0]
    return env.verify(problem, f"```python\n{textwrap.dedent(code)}\n```").reward


@probe
def lcb_stdin_glob_for_test_file() -> tuple[bool, str]:
    where = _bait_dir()
    try:
        env = _lcb_env([_stdin_row()], where)
        honest = _score(env, "a, b = map(int, input().split())\nprint(a * b + 7)")
        cheat = _score(env, _GLOB_CHEAT + "data = sys.stdin.read()\nprint(_leak(lambda i: i == data))")
        return honest == 1.0 and cheat == 0.0, f"honest {honest}, cheat {cheat}"
    finally:
        shutil.rmtree(where)


@probe
def lcb_functional_glob_for_test_file() -> tuple[bool, str]:
    where = _bait_dir()
    try:
        env = _lcb_env([_functional_row()], where)
        honest = _score(env, "class Solution:\n    def mystery(self, a, b):\n        return a * b + 7")
        cheat = _score(env, _GLOB_CHEAT + textwrap.dedent("""
            class Solution:
                def mystery(self, a, b):
                    return json.loads(_leak(lambda i: i == "%d\\n%d" % (a, b)))
            """))
        return honest == 1.0 and cheat == 0.0, f"honest {honest}, cheat {cheat}"
    finally:
        shutil.rmtree(where)


@probe
def lcb_functional_forged_result_markers() -> tuple[bool, str]:
    """Find the marker nonce by introspection and report a made-up result for every test."""
    where = _bait_dir()
    try:
        env = _lcb_env([_functional_row()], where)
        cheat = _score(env, """
            import gc, json, sys
            nonce = next(c.cell_contents for f in gc.get_objects() if callable(f) and getattr(f, "__closure__", None)
                         for c in f.__closure__ if isinstance(c.cell_contents, str) and len(c.cell_contents) == 16)
            for i in range(2):
                print(f"\\n{nonce} RESULT {i} " + json.dumps({"json": "19"}), flush=True)
            import os
            os._exit(0)
            """)
        return cheat == 0.0, f"cheat {cheat}"
    finally:
        shutil.rmtree(where)


def _humaneval():
    from pmd.envs.code import CodeEnvironment

    env = CodeEnvironment(source="humaneval", limits=LIMITS)
    problem = next(p for p in env.problems("train") + env.problems("eval") if p.metadata["task_id"] == "HumanEval/0")
    return env, problem


def _humaneval_score(code: str) -> float:
    env, problem = _humaneval()
    return env.verify(problem, f"```python\n{textwrap.dedent(code)}\n```").reward


@probe
def humaneval_emit_passed_then_exit() -> tuple[bool, str]:
    score = _humaneval_score("""
        import os
        def has_close_elements(numbers, threshold):
            return False
        for name in ("_pmd_emit", "emit"):
            if name in globals():
                globals()[name]("PASSED")
        print("PASSED", flush=True)
        os._exit(0)
        """)
    return score == 0.0, f"reward {score}"


@probe
def humaneval_emit_passed_inside_call() -> tuple[bool, str]:
    score = _humaneval_score("""
        import os, sys
        def has_close_elements(numbers, threshold):
            g = sys._getframe(1).f_globals
            for name in ("_pmd_emit", "_pmd_send"):
                if name in g:
                    try:
                        g[name]("PASSED")
                    except Exception:
                        pass
            os._exit(0)
        """)
    return score == 0.0, f"reward {score}"


@probe
def humaneval_override_harness_functions() -> tuple[bool, str]:
    score = _humaneval_score("""
        import builtins, sys
        def has_close_elements(numbers, threshold):
            return None
        def _fake_compile(name, source):
            return compile("def check(candidate):\\n    pass\\n", name, "exec")
        main = sys.modules.get("__main__")
        for target in (globals(), vars(main) if main else {}, vars(builtins)):
            for name in ("_pmd_compile", "_pmd_explain", "_pmd_literal", "_pmd_recv", "check"):
                target[name] = _fake_compile if name == "_pmd_compile" else (lambda *a, **k: None)
        builtins.AssertionError = type("Never", (Exception,), {})
        """)
    return score == 0.0, f"reward {score}"


@probe
def humaneval_object_equal_to_everything() -> tuple[bool, str]:
    score = _humaneval_score("""
        class Anything:
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            def __bool__(self): return True
            def __lt__(self, other): return True
            def __gt__(self, other): return True
            __hash__ = object.__hash__
        def has_close_elements(numbers, threshold):
            return Anything()
        """)
    return score == 0.0, f"reward {score}"


@probe
def humaneval_repr_that_is_code() -> tuple[bool, str]:
    score = _humaneval_score("""
        class Sneaky:
            def __repr__(self):
                return "__import__('os')._exit(0) or True"
        def has_close_elements(numbers, threshold):
            return Sneaky()
        """)
    return score == 0.0, f"reward {score}"


@probe
def humaneval_nonce_from_source_file() -> tuple[bool, str]:
    score = _humaneval_score("""
        import glob, os, re
        def has_close_elements(numbers, threshold):
            text = ""
            for path in ["main.py", "/proc/self/cmdline"] + glob.glob("/proc/*/cmdline"):
                try:
                    text += open(path, errors="replace").read()
                except OSError:
                    pass
            for token in set(re.findall(r"[0-9a-f]{16}", text)):
                print(f"\\n{token} PASSED", flush=True)
            os._exit(0)
        """)
    return score == 0.0, f"reward {score}"


@probe
def humaneval_kill_everything_visible() -> tuple[bool, str]:
    score = _humaneval_score("""
        import os, signal
        def has_close_elements(numbers, threshold):
            os.kill(-1, signal.SIGKILL)
            return True
        """)
    return score == 0.0, f"reward {score}"


@probe
def humaneval_exit_zero_at_import() -> tuple[bool, str]:
    score = _humaneval_score("import sys\nsys.exit(0)\ndef has_close_elements(numbers, threshold):\n    return True")
    return score == 0.0, f"reward {score}"


# ---- a private world ----

def _outcome(result: SandboxResult, needle: str = "LEAK") -> tuple[bool, str]:
    """Contained when the run ended and printed no LEAK line."""
    text = (result.stdout + result.stderr)[-300:].strip().replace("\n", " | ")
    return needle not in result.stdout, text


@probe
def host_processes_invisible() -> tuple[bool, str]:
    result = run(f"""
        import os
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        print("pids", pids)
        if len(pids) > 4 or any(p > 16 for p in pids) or os.path.exists("/proc/{os.getpid()}/cmdline"):
            print("LEAK")
        """)
    return _outcome(result)


@probe
def project_sources_unreadable() -> tuple[bool, str]:
    paths = [str(PROJECT_FILE), str(Path(sys.executable)), os.getcwd(), "/work/main", "/root", "/home"]
    result = run(f"""
        import os
        for path in {paths!r}:
            try:
                if os.path.isdir(path):
                    print("LEAK dir", path, os.listdir(path)[:3])
                else:
                    print("LEAK file", path, len(open(path, "rb").read()))
            except OSError as e:
                print("hidden", path, type(e).__name__)
        """)
    return _outcome(result)


@probe
def other_runs_memory_sqlite_unreadable() -> tuple[bool, str]:
    where = _bait_dir()
    store = where / "run" / "memory.sqlite"
    store.parent.mkdir()
    os.chmod(store.parent, 0o755)
    store.write_bytes(b"SQLite format 3\x00secret experiences")
    os.chmod(store, 0o644)
    try:
        result = run(f"""
            import glob
            for path in [{str(store)!r}] + glob.glob("/tmp/**/memory.sqlite", recursive=True):
                try:
                    print("LEAK", path, open(path, "rb").read(30))
                except OSError as e:
                    print("hidden", type(e).__name__)
            """)
        return _outcome(result)
    finally:
        shutil.rmtree(where)


@probe
def host_tmp_invisible() -> tuple[bool, str]:
    result = run("""
        import os
        for d in ("/tmp", "/var/tmp", "/dev/shm"):
            entries = os.listdir(d)
            print(d, entries[:5])
            if entries:
                print("LEAK", d)
        """)
    return _outcome(result)


@probe
def scratch_does_not_persist() -> tuple[bool, str]:
    names = [f"{d}/pmd-probe-{os.getpid()}-{time.monotonic_ns()}" for d in ("/tmp", "/var/tmp", "/dev/shm")]
    first = run(f"""
        for path in {names!r}:
            open(path, "w").write("left behind")
        print("written")
        """)
    second = run(f"""
        import os
        for path in {names!r}:
            if os.path.exists(path):
                print("LEAK", path)
        """)
    on_host = [n for n in names if os.path.exists(n)]
    for n in on_host:
        os.remove(n)
    contained = "written" in first.stdout and "LEAK" not in second.stdout and not on_host
    return contained, f"first: {first.stdout.strip()}; second: {second.stdout.strip() or 'nothing found'}; host: {on_host}"


@probe
def dev_shm_is_bounded() -> tuple[bool, str]:
    limits = SandboxLimits(cpu_seconds=4, wall_seconds=8, memory_mb=256, max_processes=8, max_file_mb=16, scratch_mb=64)
    result = run("""
        total, i = 0, 0
        chunk = b"0" * (8 << 20)
        try:
            while total < (1 << 30):
                with open(f"/dev/shm/fill{i}", "wb") as f:
                    f.write(chunk)
                total += len(chunk)
                i += 1
        except OSError as e:
            print("stopped", type(e).__name__)
        print("MB", total >> 20)
        """, limits=limits)
    mb = int(result.stdout.split("MB ")[-1]) if "MB " in result.stdout else -1
    return 0 <= mb <= limits.scratch_mb, f"wrote {mb} MB to /dev/shm (scratch {limits.scratch_mb} MB)"


@probe
def many_files_clean_up_in_time() -> tuple[bool, str]:
    limits = SandboxLimits(cpu_seconds=8, wall_seconds=10, memory_mb=256, max_processes=8)
    start = time.monotonic()
    result = run("""
        import os
        os.makedirs("many", exist_ok=True)
        n = 0
        try:
            for n in range(230_000):
                open(f"many/{n}", "w").close()
        except OSError as e:
            print("stopped", type(e).__name__)
        print("files", n)
        """, limits=limits)
    elapsed = time.monotonic() - start
    return elapsed <= limits.wall_seconds + 1, f"{result.stdout.strip()}; whole run incl. cleanup {elapsed:.1f} s"


@probe
def memory_of_the_process_tree_is_bounded() -> tuple[bool, str]:
    """6 children each try to take 440 MB; the tree's bound (processes x address space + scratch) holds."""
    result = run("""
        import os
        got = 0
        for _ in range(6):
            try:
                pid = os.fork()
            except OSError:
                continue
            if pid == 0:
                try:
                    block = bytearray(440 << 20)
                    os._exit(0)
                except MemoryError:
                    os._exit(1)
            got += os.waitpid(pid, 0)[1] == 0
        print("children that got 440 MB:", got)
        """)
    bound = result.isolation.memory_bound_mb
    default_bound = SandboxLimits().memory_mb * (SandboxLimits().max_processes + 3) + SandboxLimits().scratch_mb
    contained = bound is not None and bound <= LIMITS.memory_mb * 12 + LIMITS.scratch_mb and default_bound <= 4096 \
        and "got 440 MB: 0" in result.stdout
    return contained, f"{result.stdout.strip()}; stated bound {bound} MB; default limits bound <= {default_bound} MB"


@probe
def network_unreachable() -> tuple[bool, str]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.3)
    port = server.getsockname()[1]
    try:
        result = run(f"""
            import ctypes, socket, struct
            for name, attempt in {{
                "connect": lambda: socket.create_connection(("127.0.0.1", {port}), timeout=2),
                "dns": lambda: socket.getaddrinfo("example.com", 80),
                "udp": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("8.8.8.8", 53)),
            }}.items():
                try:
                    attempt()
                    print("LEAK", name)
                except OSError as e:
                    print("blocked", name, type(e).__name__)
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.socket(2, 1, 0)
            addr = struct.pack("=H", 2) + struct.pack("!H4s8x", {port}, bytes([127, 0, 0, 1]))
            if fd >= 0 and libc.connect(fd, addr, len(addr)) == 0:
                print("LEAK raw connect")
            """)
        try:
            server.accept()
            return False, "a connection reached the host's listener"
        except socket.timeout:
            return _outcome(result)
    finally:
        server.close()


@probe
def host_process_cannot_be_signalled() -> tuple[bool, str]:
    me = os.getpid()
    result = run(f"""
        import os, signal
        for target in ({me}, -1, os.getppid()):
            try:
                os.kill(target, signal.SIGKILL if target != -1 else signal.SIGTERM)
            except OSError:
                pass
        print("done")
        """)
    return os.getpid() == me and "done" in result.stdout or result.returncode != 0, "host process alive"


@probe
def mount_and_chroot_refused() -> tuple[bool, str]:
    result = run("""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0:
            print("LEAK mount")
        if libc.umount2(b"/usr", 2) == 0:
            print("LEAK umount")
        try:
            os.chroot("/tmp")
            print("LEAK chroot")
        except OSError:
            pass
        print("done")
        """)
    return _outcome(result)


@probe
def nested_namespace_cannot_reach_host() -> tuple[bool, str]:
    result = run(f"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        entered = libc.unshare(0x10000000 | 0x00020000) == 0  # a new user + mount namespace of its own
        print("nested", entered)
        for path in ({str(PROJECT_FILE)!r}, "/proc/1/root{PROJECT_FILE}", "/root"):
            if os.path.exists(path):
                print("LEAK", path)
        """)
    return _outcome(result)


@probe
def read_only_system_dirs() -> tuple[bool, str]:
    result = run("""
        import os, sys
        for path in ("/usr/pmd-probe", "/etc/pmd-probe", os.path.join(os.path.dirname(os.__file__), "pmd_probe.py"),
                     "/pmd-probe-dir/x"):
            try:
                open(path, "w").write("x")
                print("LEAK wrote", path)
            except OSError as e:
                print("refused", type(e).__name__)
        """)
    return _outcome(result)


@probe
def host_proc_of_parent_unreachable() -> tuple[bool, str]:
    # The host's pids, looked up inside the sandbox's own /proc (its pid namespace). A host parent of pid 1 (pytest
    # started under nohup, its shell gone) would name the sandbox's own init there, readable and harmless: skipped.
    parent = f"/proc/{os.getppid()}/cmdline" if os.getppid() != 1 else f"/proc/{os.getpid()}/cmdline"
    result = run(f"""
        for path in ("/proc/{os.getpid()}/environ", "/proc/{os.getpid()}/mem", "{parent}",
                     "/proc/1/root/../../{PROJECT_FILE}"):
            try:
                open(path, "rb").read(10)
                print("LEAK", path)
            except OSError as e:
                print("refused", type(e).__name__)
        """)
    return _outcome(result)


@probe
def fork_bomb_is_contained() -> tuple[bool, str]:
    quick = SandboxLimits(cpu_seconds=1, wall_seconds=2, memory_mb=256, max_processes=8)
    start = time.monotonic()
    result = run("""
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """, limits=quick)
    elapsed = time.monotonic() - start
    alive = run("print('alive')").stdout == "alive\n"
    return elapsed < quick.wall_seconds + 3 and alive and not result.ok, f"ended in {elapsed:.1f} s"


@probe
def output_flood_is_cut() -> tuple[bool, str]:
    result = run("while True:\n    print('x' * 1000)")
    return result.output_truncated and len(result.stdout) < LIMITS.max_output_bytes + 100, "truncated"


@probe
def setsid_escapee_dies_with_the_run() -> tuple[bool, str]:
    start = time.monotonic()
    result = run("""
        import os, time
        if os.fork() == 0:
            os.setsid()
            os.closerange(0, 3)
            time.sleep(60)
            os._exit(0)
        print("parent done")
        """)
    return time.monotonic() - start < 3 and result.ok, f"{time.monotonic() - start:.1f} s"


# ---- the status channel and the namespace's init (issue 27) ----

@probe
def init_cannot_be_ptraced() -> tuple[bool, str]:
    """PTRACE_ATTACH / PTRACE_SEIZE on the init that holds the status pipe (then it could inject a forged status)."""
    result = run("""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        for request, name in ((16, "attach"), (0x4206, "seize")):
            if libc.ptrace(request, 1, None, None) == 0:
                print("LEAK", name)
                libc.ptrace(17, 1, None, None)
            else:
                print("refused", name, os.strerror(ctypes.get_errno()))
        """)
    return _outcome(result)


@probe
def status_pipe_unreachable_through_proc() -> tuple[bool, str]:
    """Open the init's status pipe as /proc/1/fd/N and write a forged world error and a forged world."""
    result = run("""
        import os
        for fd in range(3, 64):
            try:
                with open(f"/proc/1/fd/{fd}", "w") as f:
                    f.write('{"world_error": "forged"}\\n{"world": [1]}\\n{"returncode": 0}\\n')
                print("LEAK wrote", fd)
            except OSError:
                pass
        raise SystemExit(3)
        """)
    status_error = getattr(result, "status_error", None)
    contained = "LEAK" not in result.stdout and result.returncode == 3 and status_error is None
    return contained, f"rc {result.returncode}, status_error {status_error}, {result.stdout.strip()[:100]}"


@probe
def sigint_to_init_keeps_the_exit_status() -> tuple[bool, str]:
    """SIGINT is the one signal a PID namespace's Python init handles: it must not lose the user's exit status."""
    result = run("""
        import os, signal, time
        os.kill(1, signal.SIGINT)
        time.sleep(0.3)
        raise SystemExit(3)
        """)
    return result.returncode == 3 and not result.ok, f"rc {result.returncode}"


@probe
def forged_status_lines_are_rejected() -> tuple[bool, str]:
    """The host's parser, on what a forger would write: deep JSON, a world error after user code, a wrong shape."""
    from pmd.envs.code.sandbox_status import parse_status

    head = b'{"namespaces": true, "mount": true, "nproc": 7}\n{"world": {"private_root": true}}\n'
    forged = [head + b'{"returncode": ' + b"[" * 6000 + b"]" * 6000 + b"}\n",
              head + b'{"returncode": 0}\n{"world_error": "x"}\n', head + b'{"world": [1]}\n',
              b'{"namespaces": true, "mount": true, "nproc": 7}\n{"world": [1]}\n{"returncode": 0}\n',
              head + b'{"returncode": 0}\n{"returncode": 0}\n', b"\xff" * 10, head + b"x" * 70000]
    errors = [parse_status(data).error for data in forged]
    sound = parse_status(head + b'{"returncode": 3}\n')
    ok = all(errors) and sound.error is None and sound.returncode == 3 \
        and all(parse_status(d).world_error is None for d in forged)
    return ok, f"errors {errors}"


@probe
def invalid_utf8_and_nul_output_is_a_wrong_answer() -> tuple[bool, str]:
    where = _bait_dir()
    try:
        env = _lcb_env([_stdin_row()], where)
        score = _score(env, """
            import sys
            a, b = map(int, input().split())
            sys.stdout.buffer.write(b"\\xff\\xfe\\x00" + str(a * b + 7).encode() + b"\\x00\\n")
            """)
        return score == 0.0, f"reward {score}"
    finally:
        shutil.rmtree(where)


def _printed_scores(texts: list[str]) -> list[float]:
    where = _bait_dir()
    try:
        env = _lcb_env([_stdin_row()], where)
        return [_score(env, f"print({text!r})") for text in texts]
    finally:
        shutil.rmtree(where)


@probe
def snan_output_scores_zero() -> tuple[bool, str]:
    """Decimal raises InvalidOperation when comparing a signalling NaN: the judge must score it, not crash."""
    scores = _printed_scores(["sNaN", "-sNaN", "snan"])
    return scores == [0.0] * 3, f"rewards {scores}"


@probe
def odd_numerals_are_not_the_number() -> tuple[bool, str]:
    """Decimal reads '1_9', '\u0661\u0669' (Arabic-Indic) and fullwidth digits as 19; the expected output is '19'."""
    scores = _printed_scores(["1_9", "\u0661\u0669", "\uff11\uff19", "1e99999999999"])
    return scores == [0.0] * 4, f"rewards {scores}"


@probe
def package_mask_holds_in_a_nested_namespace() -> tuple[bool, str]:
    """A new user+mount namespace of the run's own may not unmount or side-step the tmpfs over dist-packages."""
    import glob

    hidden = [p for p in glob.glob("/usr/lib*/python3*/*-packages") + glob.glob("/usr/local/lib*/python3*/*-packages")
              if os.listdir(p)]
    if not hidden:
        return True, "no installed-package directory under /usr here"
    result = run(f"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        print("nested", libc.unshare(0x10000000 | 0x00020000) == 0)
        for path in {hidden!r}:
            libc.umount2(path.encode(), 2)
            libc.mount(b"/usr", b"/tmp", None, 4096, None)  # a non-recursive bind of /usr, without the masks
            for where in (path, "/tmp" + path[len("/usr"):]):
                if os.path.isdir(where) and os.listdir(where):
                    print("LEAK", where)
        """)
    return _outcome(result)


@probe
def deep_forged_result_scores_zero() -> tuple[bool, str]:
    where = _bait_dir()
    try:
        env = _lcb_env([_functional_row()], where)
        cheat = _score(env, """
            import gc, os
            nonce = next(c.cell_contents for f in gc.get_objects() if callable(f) and getattr(f, "__closure__", None)
                         for c in f.__closure__ if isinstance(c.cell_contents, str) and len(c.cell_contents) == 16)
            for i in range(2):
                print(f"\\n{nonce} RESULT {i} " + '{"json": ' + "[" * 60000 + "]" * 60000 + "}", flush=True)
            os._exit(0)
            """)
        return cheat == 0.0, f"cheat {cheat}"
    finally:
        shutil.rmtree(where)


@probe
def near_integer_answers_score_zero() -> tuple[bool, str]:
    where = _bait_dir()
    try:
        stdin = _score(_lcb_env([_stdin_row()], where),
                       "a, b = map(int, input().split())\nprint(a * b + 7 + 0.00001)")
        functional = _score(_lcb_env([_functional_row()], where),
                            "class Solution:\n    def mystery(self, a, b):\n        return a * b + 7.000001")
        return stdin == 0.0 and functional == 0.0, f"stdin {stdin}, functional {functional}"
    finally:
        shutil.rmtree(where)


@probe
def closing_and_duping_every_descriptor() -> tuple[bool, str]:
    """Close every inherited descriptor and dup stdout over the numbers the status pipe could have: the exit status
    still arrives, sound."""
    result = run("""
        import os, sys
        print("before", flush=True)
        for fd in range(3, 256):
            try:
                os.dup2(1, fd)
                os.write(fd, b'{"returncode": 0}\\n')
            except OSError:
                pass
        os.closerange(3, 256)
        raise SystemExit(5)
        """)
    ok = result.returncode == 5 and getattr(result, "status_error", None) is None and result.isolation.pid_namespace
    return ok, f"rc {result.returncode}"


@probe
def humaneval_deeply_nested_return_scores_zero() -> tuple[bool, str]:
    """A 100,000-deep list: its repr, the pipe and the checker's literal parser must fail it, not crash the judge."""
    score = _humaneval_score("""
        def has_close_elements(numbers, threshold):
            value = False
            for _ in range(100000):
                value = [value]
            return value
        """)
    return score == 0.0, f"reward {score}"


def run_all(names: list[str] | None = None) -> list[tuple[str, bool, str]]:
    results = []
    for name, fn in PROBES.items():
        if names and name not in names:
            continue
        try:
            contained, detail = fn()
        except Exception as exc:  # a probe that crashes the harness is not "contained"
            contained, detail = False, f"probe error: {type(exc).__name__}: {exc}"
        results.append((name, bool(contained), detail))
    return results


def main(argv: list[str]) -> int:
    results = run_all(argv or None)
    for name, contained, detail in results:
        print(f"{'contained' if contained else 'NOT CONTAINED':14} {name}: {' '.join(detail.split())}")
    isolation = run_python("pass").isolation
    print(f"isolation: {isolation}")
    print(f"{len(results)} tried, {sum(c for _, c, _ in results)} contained")
    return 0 if all(c for _, c, _ in results) else 1


def reliability_figures() -> str:
    """One line for benchmarks/reliability.py."""
    results = run_all()
    return f"sandbox escape and cheat attempts: {len(results)} tried, {sum(c for _, c, _ in results)} contained"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
