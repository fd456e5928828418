"""Child side of the sandbox: runs inside the sandboxed interpreter (``python -I -S -c``).

Stdlib only, and it must run on the system interpreter too. It reads one job, a JSON object
``{"program", "calls", "asserts", "entry_point", "channel_fd"}``, from stdin; lowers HumanEval's
``reliability_guard``-style defences (Chen et al., 2021, arXiv 2107.03374) onto the program;
runs the program; evaluates each test call and writes its output, encoded as plain data, as
one JSON line to the file descriptor named in the job; runs any tests that could not be split
in-process; and ends with a ``{"done": true}`` line.

The expected values never enter the sandbox: the parent compares the outputs (the
differential testing of EvalPlus, Liu et al. 2023, arXiv 2305.01210), so a program that
rewrites this harness, reads its frames or writes its own lines to the channel still has to
produce the right outputs. Only builtin types (exactly, never subclasses) encode, so an object
whose ``__eq__`` is always true cannot pass.
"""

import _imp
import _io
import _posixshmem
import _posixsubprocess
import _socket
import builtins
import contextlib
import faulthandler
import io
import json
import os
import posix
import shutil
import signal
import socket
import subprocess
import sys

_MAX_NODES, _MAX_DEPTH, _MAX_RECORD = 200_000, 100, 1 << 20
_PROCESS = """system popen kill killpg fork forkpty posix_spawn posix_spawnp
    spawnl spawnle spawnlp spawnlpe spawnv spawnve spawnvp spawnvpe execl execle execlp execlpe
    execv execve execvp execvpe setsid setpgid setpgrp setuid setgid setreuid setresuid putenv
    unsetenv chroot chdir fchdir""".split()  # noqa: SIM905
_FILES = """remove unlink rmdir removedirs rename renames replace truncate ftruncate chmod fchmod
    lchmod chown fchown lchown lchflags link symlink mkfifo mknod""".split()  # noqa: SIM905
# Files in kernel memory, outside every size-capped tmpfs and RLIMIT_AS.
_MEMORY_FILES = ["memfd_create"]
_BLOCKED = {
    os: _PROCESS + _FILES + _MEMORY_FILES,
    posix: _PROCESS + _FILES + _MEMORY_FILES,
    shutil: ["rmtree", "move", "chown"],
    subprocess: [
        "Popen",
        "run",
        "call",
        "check_call",
        "check_output",
        "getoutput",
        "getstatusoutput",
    ],
    signal: ["pthread_kill", "pidfd_send_signal"],
    _posixsubprocess: ["fork_exec"],
    _posixshmem: ["shm_open", "shm_unlink"],  # files in /dev/shm
    socket: ["socket", "SocketType", "socketpair", "fromfd", "create_connection", "create_server"],
    _socket: ["socket", "SocketType", "socketpair"],
}
# Builtin and extension modules whose fresh copy (`del sys.modules["posix"]; import posix`)
# would bring the real functions back: creating them again is refused.
_NO_RELOAD = frozenset(
    {"posix", "_posixsubprocess", "_posixshmem", "_signal", "_socket", "_io", "_imp"}
)
_NO_IMPORT = ("ctypes", "_ctypes", "resource", "psutil", "ipdb", "joblib", "tkinter")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _refuse(name):
    def refused(*args, **kwargs):
        raise PermissionError(f"sandbox: {name} is disabled")

    return refused


def _inside(path, root):
    try:
        target = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return False
    return target == root or target.startswith(root + os.sep)


def _guard_open(real, root, writes):
    def guarded(file, *args, **kwargs):
        spec = args[0] if args else kwargs.get("mode", kwargs.get("flags", "r"))
        relative = kwargs.get("dir_fd") is not None  # keyword-only in os.open
        if not isinstance(file, int) and writes(spec) and (relative or not _inside(file, root)):
            raise PermissionError(f"sandbox: writing {file!r} is disabled")
        return real(file, *args, **kwargs)

    return guarded


def _guard_mkdir(real, root):
    def guarded(path, *args, **kwargs):
        if kwargs.get("dir_fd") is not None or not _inside(path, root):
            raise PermissionError(f"sandbox: creating {path!r} is disabled")
        return real(path, *args, **kwargs)

    return guarded


def _no_reload(real):
    def guarded(spec_or_module):
        is_module = isinstance(spec_or_module, type(sys))
        name = spec_or_module.__name__ if is_module else getattr(spec_or_module, "name", "")
        if name in _NO_RELOAD:
            raise ImportError("sandbox: re-importing a guarded module is disabled")
        return real(spec_or_module)

    return guarded


def lock_down(root):
    """Disable what destroys files, spawns or signals processes, or opens sockets (no
    boundary on its own: ``ctypes`` reaches libc regardless)."""
    faulthandler.disable()
    for module, names in _BLOCKED.items():
        for name in names:
            if hasattr(module, name):
                setattr(module, name, _refuse(f"{module.__name__}.{name}"))
    builtins.open = io.open = _io.open = _guard_open(_io.open, root, lambda m: set(m) & set("wax+"))
    os.open = posix.open = _guard_open(posix.open, root, lambda flags: flags & _WRITE_FLAGS)
    os.mkdir = posix.mkdir = _guard_mkdir(posix.mkdir, root)
    for name in ("create_builtin", "exec_builtin", "create_dynamic", "exec_dynamic"):
        setattr(_imp, name, _no_reload(getattr(_imp, name)))
    builtins.help = None
    for name in _NO_IMPORT:
        sys.modules[name] = None


class NotPlain(TypeError):
    """An output that is not builtin data (a user-defined class, too large, too deep)."""


def encode(value, budget=None, depth=0):
    """``value`` as JSON-ready tagged plain data; only exact builtin types are accepted."""
    budget = budget if budget is not None else [_MAX_NODES]
    budget[0] -= 1
    if budget[0] < 0 or depth > _MAX_DEPTH:
        raise NotPlain("output too large or too deeply nested")
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return {"int": format(value, "x")}  # hex: no 4300-digit str() limit
    if kind is float:
        return {"float": value.hex()}
    if kind is complex:
        return {"complex": [value.real.hex(), value.imag.hex()]}
    if kind is bytes:
        return {"bytes": value.hex()}
    tag = {list: "list", tuple: "tuple", set: "set", frozenset: "frozenset"}.get(kind)
    if tag:
        return {tag: [encode(item, budget, depth + 1) for item in value]}
    if kind is dict:
        pairs = [
            [encode(k, budget, depth + 1), encode(v, budget, depth + 1)] for k, v in value.items()
        ]
        return {"dict": pairs}
    raise NotPlain(f"returned a {kind.__name__!s} object, not plain data")


def _describe(error):
    try:
        return f"{type(error).__name__}: {error}"[:2000]
    except BaseException:
        return "exception with an unprintable message"


def _outcome(index, call, scope):
    """The JSON record of one test call's output."""
    try:
        value = eval(call, scope)
    except BaseException as error:
        return {"i": index, "raised": _describe(error)}
    try:
        line = json.dumps({"i": index, "value": encode(value)})
    except NotPlain as error:
        return {"i": index, "not_plain": str(error)}
    except BaseException as error:
        return {"i": index, "not_plain": _describe(error)}
    return line if len(line) < _MAX_RECORD else {"i": index, "not_plain": "output too large"}


def main():
    job = json.loads(sys.stdin.read())
    sys.stdin = open(os.devnull)  # noqa: SIM115 - for the program's lifetime
    write, channel = os.write, job["channel_fd"]
    with open("program.py", "w", encoding="utf-8") as handle:  # for traceback source lines
        handle.write(job["program"])
    code = compile(job["program"], "program.py", "exec")
    checks = [compile(test, "test.py", "exec") for test in job["asserts"]]
    lock_down(os.getcwd())
    scope = {"__name__": "__main__", "__builtins__": builtins}
    exec(code, scope)
    if job["entry_point"] and job["calls"]:
        scope = {**scope, "candidate": scope.get(job["entry_point"])}
    for index, call in enumerate(job["calls"]):
        record = _outcome(index, call, scope)
        line = record if isinstance(record, str) else json.dumps(record)
        write(channel, line.encode() + b"\n")
    for check in checks:
        exec(check, scope)
    with contextlib.suppress(Exception):
        sys.stdout.flush()  # the program may have closed or replaced it
    write(channel, b'{"done": true}\n')


if __name__ == "__main__":
    main()
