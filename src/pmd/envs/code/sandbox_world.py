"""What runs inside a sandboxed child before the user code: limits, namespaces and the run's private world.

`sandbox` (host side, and the threat model) starts `python -I -S -c RUNNER <config>` as the run's dedicated uid.
RUNNER (standard library only: it must work on whichever interpreter that uid can execute) sets the rlimits,
enters new user + mount + network + PID + IPC namespaces, becomes the PID namespace's init, builds the private world
with WORLD_SOURCE's `build_world`, drops every capability, and only then forks the process that runs the user code.
It reports what it achieved, as JSON lines, on a status pipe the user code never holds.

The private world (build_world), before any user code exists:

  * every mount is made private, so nothing done here propagates to the host;
  * a small tmpfs becomes the new root, read-only once built. One more tmpfs of `scratch_mb` (and at most
    SCRATCH_INODES files) supplies /work (the working directory, with main.py), /tmp, /var/tmp and /dev/shm as bind
    mounts of its subdirectories: the whole writable world, so a run's files in RAM are bounded by one number and
    vanish with the mount namespace (no directory walk to clean up, whatever the count);
  * read-only bind mounts supply what an interpreter needs: /usr (and /bin, /lib, /lib64, /sbin, as directories or
    the same symlinks as on the host), the interpreter's own directories when they live outside /usr (its
    executable's directory, each prefix's lib* and the module search path: `sandbox_mounts`, never a whole
    prefix), a short list of /etc files (loader cache, time zone, passwd/group, hosts), and the device nodes null,
    zero, full, random and urandom. Every site-/dist-packages directory inside those is covered by an empty
    read-only tmpfs: the standard library only. Nothing else of the host exists: not the project, not /root,
    /home, /work, other runs' directories, /sys or the host's /tmp;
  * a fresh /proc for the run's own PID namespace (it shows only the run's processes);
  * pivot_root into that root and detach the old one, so no path leads back (chroot only where the syscall number
    of pivot_root is unknown).

Each step that fails is reported, not hidden: `build_world` returns what it achieved and the runner forwards it to
`SandboxResult.isolation`. When the mount namespace cannot be created at all the run falls back to the host
filesystem (see `sandbox`) and says so.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["RUNNER", "SCRATCH_INODES", "WORLD_SOURCE"]

# A tmpfs inode costs ~1 KB of kernel memory that its size= limit does not count, so file count is bounded too.
SCRATCH_INODES = 32768

# Executed inside the runner (see sandbox._RUNNER); defines build_world(cfg, source) -> dict.
WORLD_SOURCE = r'''
import ctypes, os, platform, sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_PRIVATE = 1024, 2048, 1 << 21, 1 << 18
MNT_DETACH = 2
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group", "nsswitch.conf",
             "hosts", "host.conf", "protocols", "services", "mime.types")
DEVICES = ("null", "zero", "full", "random", "urandom")
SCRATCH_INODES = __SCRATCH_INODES__
_libc = ctypes.CDLL(None, use_errno=True)


def _mount(src, dst, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    if _libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "mount %s on %s: %s" % (src, dst, os.strerror(err)))


def _locked_flags(path):
    """Flags a bind mount inherits from its source and may not drop inside a user namespace."""
    f = os.statvfs(path).f_flag
    flags = 0
    for st, ms in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
                   (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME)):
        if f & st:
            flags |= ms
    return flags


def _bind_ro(src, root):
    dst = root + src
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "a").close()
    _mount(src, dst, None, MS_BIND | MS_REC)
    _mount(None, dst, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | _locked_flags(src))


def _mirror(path, root):
    """A top-level host entry as it is: a symlink stays the same symlink, a directory becomes a read-only bind."""
    if os.path.islink(path):
        os.makedirs(os.path.dirname(root + path), exist_ok=True)
        os.symlink(os.readlink(path), root + path)
    elif os.path.exists(path):
        _bind_ro(path, root)


def build_world(cfg, source):
    """Runs as PID 1 of the new PID namespace, with full capabilities in the new user namespace."""
    got = {"mount_namespace": True, "private_root": False, "fresh_proc": False, "private_tmp": False}
    root = os.getcwd()  # the host work dir (ours, 0700): the mount point of the new root
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("pmd-root", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=755")
    scratch = root + "/.scratch"
    os.mkdir(scratch)
    _mount("pmd-scratch", scratch, "tmpfs", MS_NOSUID | MS_NODEV,
           "size=%dm,nr_inodes=%d,mode=755" % (cfg["scratch_mb"], SCRATCH_INODES))
    for d, mode in (("work", 0o700), ("tmp", 0o1777), ("var/tmp", 0o1777), ("dev/shm", 0o1777)):
        os.makedirs(root + "/" + d, exist_ok=True)
        os.mkdir(scratch + "/" + d.replace("/", "_"))
        os.chmod(scratch + "/" + d.replace("/", "_"), mode)
        _mount(scratch + "/" + d.replace("/", "_"), root + "/" + d, None, MS_BIND)
    with open(root + "/work/main.py", "w", encoding="utf-8", errors="replace") as f:
        f.write(source)
    if _libc.umount2(scratch.encode(), MNT_DETACH) != 0:  # the four binds keep the one scratch tmpfs alive
        raise OSError(ctypes.get_errno(), "umount scratch")
    os.rmdir(scratch)
    for d in ("proc", "etc"):
        os.makedirs(root + "/" + d, exist_ok=True)
    plan = mount_plan(sys.executable, [sys.base_prefix, sys.prefix], sys.path)  # sandbox_mounts
    for path in plan["system"]:
        _mirror(path, root)
    for path in plan["binds"]:
        _bind_ro(path, root)
    for path in plan["masks"]:  # installed packages (and tests shipped in them) stay out: stdlib only
        _mount("pmd-hidden", root + path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
               "size=4k,nr_inodes=2,mode=555")
    for name in ETC_FILES:
        _mirror("/etc/" + name, root)
    for name in DEVICES:
        if os.path.exists("/dev/" + name):
            _bind_ro("/dev/" + name, root)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, root + "/dev/" + name)
    _mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)  # the skeleton; binds stay writable
    got["private_tmp"] = True
    try:
        _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        got["fresh_proc"] = True
    except OSError as e:
        got["proc_error"] = str(e)
    number = PIVOT_ROOT.get(platform.machine())
    os.chdir(root)
    if number is not None and _libc.syscall(number, b".", b".") == 0:
        if _libc.umount2(b".", MNT_DETACH) != 0:  # the old root, stacked under the new one
            os._exit(122)  # host tree still reachable: refuse to run user code
        got["private_root"] = True
    else:
        os.chroot(".")
        got["root_error"] = "pivot_root unavailable; chroot used"
    os.chdir("/work")
    os.environ["HOME"] = "/work"
    os.environ["TMPDIR"] = "/tmp"
    return got
'''.replace("__SCRATCH_INODES__", str(SCRATCH_INODES)) \
    + Path(__file__).with_name("sandbox_mounts.py").read_text(encoding="utf-8")


# The sandbox's child runs `python -I -S -c RUNNER <config>`: limits and namespaces first, then the user code.
# Standard library only; it must work on whichever interpreter the sandbox user can execute.
RUNNER = r'''
import builtins, json, os, resource, sys

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = \
    0x00020000, 0x08000000, 0x10000000, 0x20000000, 0x40000000
PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4


def own_process_count():
    uid, n = os.getuid(), 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                n += os.stat("/proc/" + name).st_uid == uid
            except OSError:
                pass
    return n


def set_limit(name, soft, hard=None):
    res = getattr(resource, name)
    hard = soft if hard is None else hard
    cur_hard = resource.getrlimit(res)[1]
    if cur_hard != resource.RLIM_INFINITY:
        hard = min(hard, cur_hard)
    resource.setrlimit(res, (min(soft, hard), hard))


def enter_namespaces():
    """New user+mount+net+pid+ipc namespaces (mount left out where it cannot be had), with this uid mapped to
    itself so files it creates on the private tmpfs have an owner. Capabilities are dropped later (drop_caps), once
    the private world is built."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    except Exception:
        return None
    base = CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC
    uid, gid = os.getuid(), os.getgid()
    for flags in (base | CLONE_NEWNS, base):
        if libc.unshare(flags) == 0:
            break
    else:
        return None
    try:
        for name, text in (("setgroups", "deny"), ("uid_map", "%d %d 1" % (uid, uid)), ("gid_map", "%d %d 1" % (gid, gid))):
            with open("/proc/self/" + name, "w") as f:
                f.write(text)
    except OSError:
        if flags & CLONE_NEWNS:
            os._exit(124)  # a mount namespace without an id map cannot build its world: refuse
    return {"mount": bool(flags & CLONE_NEWNS)}


def drop_caps():
    """Drop every capability the new user namespace granted; refuse to run user code if that fails."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    if libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()) != 0:
        os._exit(121)


def guard_network():
    """Only where no network namespace could be made (best effort, ctypes bypasses it): refuse to create sockets
    other than AF_UNIX through the socket module. Replaces socket.socket only, never _socket.socket (the class
    socket.socket calls into), so socketpair(), asyncio and multiprocessing keep working."""
    import socket

    real = socket.socket

    def denied(*args, **kwargs):
        raise PermissionError(13, "network access is disabled in the sandbox")

    class GuardedSocket(real):
        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            if fileno is None and family != socket.AF_UNIX:
                denied()
            real.__init__(self, family, type, proto, fileno)

    socket.socket = GuardedSocket
    for name in ("create_connection", "create_server", "getaddrinfo", "gethostbyname", "gethostbyname_ex",
                 "gethostbyaddr", "getnameinfo"):
        setattr(socket, name, denied)


# __WORLD__


def run_user_code(path):
    import traceback, types

    def quit_(code=None):
        raise SystemExit(code)

    builtins.exit = builtins.quit = quit_
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        try:
            stream.reconfigure(encoding="utf-8", errors="backslashreplace" if stream is not sys.stdin else "replace")
        except Exception:
            pass
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    sys.argv = [path]
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        exec(compile(source, path, "exec"), module.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None  # hide this runner's frame
        traceback.print_exception(type(exc), exc, tb)
        raise SystemExit(1)


def reap_as_init(child, status_fd):
    """PID-namespace init: reap everything until the user process exits, report its status, then exit (which makes
    the kernel kill whatever is left in the namespace)."""
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if pid == child:
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            os.write(status_fd, (json.dumps({"returncode": code}) + "\n").encode())
            os._exit(0)


def guard_init():
    """Before the user process exists: make this init (which holds the status pipe) unreachable from it. Not
    dumpable, so ptrace, /proc/1/mem and /proc/1/fd/N need CAP_SYS_PTRACE, which no user code has; SIGINT (the one
    signal Python handles, and so the one a PID namespace delivers to its init from inside) ignored, so a
    KeyboardInterrupt cannot kill it before it reports the exit status."""
    import ctypes, signal
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        os._exit(120)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def unguard_child():
    """The user process itself is an ordinary one again (dumpable, Ctrl-C raises KeyboardInterrupt)."""
    import ctypes, signal
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def report(status_fd, **items):
    os.write(status_fd, (json.dumps(items) + "\n").encode())


def main():
    cfg = json.loads(sys.argv[1])
    status_fd = cfg["status_fd"]
    mb = 1024 * 1024
    set_limit("RLIMIT_CORE", 0)
    set_limit("RLIMIT_FSIZE", int(cfg["max_file_mb"] * mb))
    nproc = own_process_count() + 2 + int(cfg["max_processes"])  # +2: this runner and the namespace init
    set_limit("RLIMIT_NPROC", nproc)
    set_limit("RLIMIT_AS", int(cfg["memory_mb"] * mb))
    cpu = max(1, -int(-cfg["cpu_seconds"] // 1))  # whole seconds (kernel granularity), rounded up
    set_limit("RLIMIT_CPU", cpu, cpu + 1)
    with open(cfg["path"], encoding="utf-8", errors="replace") as f:
        source = f.read()
    namespaces = enter_namespaces()
    if namespaces is None:
        guard_network()
    report(status_fd, namespaces=namespaces is not None, mount=bool(namespaces and namespaces["mount"]), nproc=nproc)
    if namespaces:  # the first fork after unshare(CLONE_NEWPID) becomes the namespace's init
        init = os.fork()
        if init:
            drop_caps()
            os.close(status_fd)
            os.waitpid(init, 0)
            os._exit(0)
        if namespaces["mount"]:
            try:
                report(status_fd, world=build_world(cfg, source))
            except BaseException as exc:
                report(status_fd, world_error="%s: %s" % (type(exc).__name__, exc))
                os._exit(125)
        drop_caps()
        guard_init()
        child = os.fork()
        if child:
            reap_as_init(child, status_fd)
        unguard_child()
    os.close(status_fd)
    run_user_code(cfg["path"])


main()
'''.replace("# __WORLD__", WORLD_SOURCE)
