"""Which host paths a sandbox run's private root shows: the system directories and what the interpreter needs to
run, and never an installed package (issue 27: a conda env, a global pyenv or a Docker python:3.x keeps its
site-packages inside the interpreter's prefix, and so had HumanEval's own tests readable inside the sandbox).

`mount_plan` is pure apart from reading the host's directory listings, so tests can give it a fake layout. The
runner (`sandbox_world`) executes this file's source inside the child before any user code exists, on whichever
interpreter the sandbox user can run: standard library only, no annotations newer than Python 3.6, and no
`from __future__` line (the source is pasted into the runner's middle).
"""

import os

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
PACKAGE_DIRS = ("site-packages", "dist-packages")


def _under(path, parents):
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in parents)


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def interpreter_binds(executable, prefixes, search_path, system=SYSTEM_DIRS):
    """Host paths outside `system` the interpreter needs: its executable's directory (as named and resolved, so a
    venv's bin/python still starts), each prefix's lib* directories (the standard library, lib-dynload and the
    shared libraries they load), pyvenv.cfg, and its module search path. Never a whole prefix: conda's pkgs/ and
    envs/, or a pyenv's other versions, stay out. Resolved, existing, and none inside another."""
    found = [os.path.dirname(executable), os.path.dirname(os.path.realpath(executable))]
    for prefix in prefixes:
        found.append(os.path.join(prefix, "pyvenv.cfg"))
        found += [os.path.join(prefix, name) for name in _listdir(prefix) if name.startswith("lib")]
    found += list(search_path)
    system = [os.path.realpath(p) for p in system]
    binds = []
    for path in found:
        real = os.path.realpath(path)
        if real not in binds and os.path.exists(real) and not _under(real, system):
            binds.append(real)
    return [b for b in binds if not any(b != other and _under(b, [other]) for other in binds)]


def package_dirs(roots):
    """Installed-package directories in `roots`, resolved: ROOT/*/X, ROOT/lib*/*/X and ROOT/local/lib*/*/X for X in
    PACKAGE_DIRS, which covers Debian's /usr/lib/python3/dist-packages, a Docker python's
    /usr/local/lib/python3.X/site-packages, and a conda, pyenv or venv prefix's lib/python3.X/site-packages."""
    found = []
    for root in roots:
        levels = [root]
        for base in (root, os.path.join(root, "local")):
            levels += [os.path.join(base, name) for name in _listdir(base) if name.startswith("lib")]
        for level in levels:
            candidates = [level] + [os.path.join(level, name) for name in _listdir(level)]
            for parent in candidates:
                for name in PACKAGE_DIRS:
                    path = os.path.realpath(os.path.join(parent, name))
                    if path not in found and os.path.isdir(path):
                        found.append(path)
    return found


def mount_plan(executable, prefixes, search_path, system=SYSTEM_DIRS):
    """{"system": dirs mirrored as they are, "binds": interpreter paths bound read-only, "masks": package
    directories inside either, each covered by an empty read-only tmpfs}."""
    binds = interpreter_binds(executable, prefixes, search_path, system)
    shown = [os.path.realpath(p) for p in system if os.path.exists(p)] + binds
    masks = [p for p in package_dirs(list(system) + binds) if _under(p, shown)]
    return {"system": list(system), "binds": binds, "masks": masks}


def exposed(path, plan):
    """Whether a host path (resolved) is visible inside a root built from `plan`."""
    real = os.path.realpath(path)
    shown = [os.path.realpath(p) for p in plan["system"]] + plan["binds"]
    return _under(real, shown) and not _under(real, plan["masks"])
