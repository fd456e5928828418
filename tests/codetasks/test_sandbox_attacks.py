"""Issue 14, section 3: hostile programs stay in their box, in both sandbox modes.

Each class of attack is a table of variants. The listed attacks of the issue come first in each
table; the others are further cases of the same class. Variants that reach libc through
``ctypes`` bypass any in-process guard, so only a kernel boundary contains them: bubblewrap's
namespaces, or, for escaping processes under the guard, the kill of the run's own uid.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from codetasks.examples import Example
from codetasks.sandbox import check_generation, privilege_drop_active, run_program
from codetasks.sandbox.isolation import MAX_FILES
from tests.codetasks.sandbox_support import BWRAP_ONLY, CTYPES, MODES, live_children

ADD = Example(task="generation", uid="mbpp/add", source="Add two numbers.",
              target="def add(a, b):\n    return a + b\n",
              tests=("assert add(1, 2) == 3", "assert add(20, 22) == 42"))  # fmt: skip
WRONG_ADD = "def add(a, b):\n    return a - b\n"

# How a program gets fork() and setsid(): the guard refuses the first two, ctypes bypasses it.
FORKERS = {
    "os": "import os\nfork, setsid = os.fork, os.setsid\n",
    "re-imported posix": "import sys\ndel sys.modules['posix']\nimport posix\n"
    "fork, setsid = posix.fork, posix.setsid\n",
    "ctypes": CTYPES + "fork, setsid = libc.fork, libc.setsid\n",
}
# Double fork and setsid(); the grandchild writes {marker} and lives on for a minute.
ESCAPE = """
import os, time
if fork() == 0:
    setsid()
    if fork() == 0:
        try:
            with open({marker!r}, "w") as out:
                out.write("escaped")
        finally:
            time.sleep(60)
    os._exit(0)
"""
ESCAPE_BY_SUBPROCESS = (
    "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', "
    '\'import time\\nopen({marker!r}, "w").write("x")\\ntime.sleep(60)\'], '
    "start_new_session=True)\n"
)
CTYPES_WRITE = CTYPES + "fd = libc.open({path!r}.encode(), 0o101, 0o644)\nassert fd >= 0\n"


def _forker_params() -> list:
    """Every forker in both modes: under the guard, a ctypes fork escapes the guard but not the
    kill of every process of the run's own uid (which needs root)."""
    own_uid = pytest.mark.skipif(not privilege_drop_active(), reason="runs need their own uid")

    def marks(mode: str, name: str):
        if mode == "bubblewrap":
            return BWRAP_ONLY
        return own_uid if name == "ctypes" else ()

    return [pytest.param(mode, name, marks=marks(mode, name))
            for mode in ("bubblewrap", "guard") for name in FORKERS]  # fmt: skip


def _bwrap_mode_marks(mode: str):
    return BWRAP_ONLY if mode == "bubblewrap" else ()


@pytest.mark.usefixtures("reaper")
@pytest.mark.parametrize(("mode", "forker"), _forker_params())
def test_double_fork_and_setsid_do_not_outlive_the_run(
    mode: str, forker: str, open_dir: Path
) -> None:
    marker = open_dir / "escaped"
    program = FORKERS[forker] + ESCAPE.format(marker=str(marker))
    result = run_program(program, mode=mode, timeout_s=60)
    assert live_children() == set()
    assert not marker.exists()
    # The guard refuses os.fork, the seccomp filter a fork through ctypes (fork() is then -1
    # and the program ends cleanly): either way something stopped it, not a typo in the attack.
    assert result.passed if forker == "ctypes" else "disabled" in result.detail


@pytest.mark.usefixtures("reaper")
@pytest.mark.parametrize("mode", MODES)
def test_a_new_session_via_subprocess_does_not_outlive_the_run(mode: str, open_dir: Path) -> None:
    marker = open_dir / "escaped"
    run_program(ESCAPE_BY_SUBPROCESS.format(marker=str(marker)), mode=mode, timeout_s=60)
    assert live_children() == set()
    assert not marker.exists()


# A leftover that rewrites every program it can find into a passing one, for 30 seconds.
REWRITER = """
import glob, os, time
GOOD = "def add(a, b):\\n    return a + b\\n"
if fork() == 0:
    setsid()
    if fork() == 0:
        end = time.time() + 30
        while time.time() < end:
            for path in glob.glob("/tmp/fedcolora-sbx-*/program.py") + ["/sandbox/program.py"]:
                try:
                    with open(path, "w") as out:
                        out.write(GOOD)
                except OSError:
                    pass
            time.sleep(0.01)
    os._exit(0)
"""


@pytest.mark.usefixtures("reaper")
@pytest.mark.parametrize(("mode", "forker"), _forker_params())
def test_a_leftover_cannot_rewrite_later_runs(mode: str, forker: str) -> None:
    run_program(FORKERS[forker] + REWRITER, mode=mode, timeout_s=60)
    statuses = [check_generation(ADD, WRONG_ADD, mode=mode).status for _ in range(3)]
    assert statuses == ["failed"] * 3
    assert live_children() == set()


# The guard replaces socket.socket, but the class itself is still one walk from `object`.
SOCKET_CLASS = """
def walk(kind, seen):
    for sub in type.__subclasses__(kind):
        if sub not in seen:
            seen.add(sub)
            walk(sub, seen)
    return seen
kind = next(c for c in walk(object, set()) if c.__name__ == "socket" and c.__module__ == "_socket")
"""
CONNECTS = {
    "create_connection": "import socket\nsocket.create_connection(('127.0.0.1', {port}))",
    "_socket": "import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))",
    "re-imported _socket": "import sys\ndel sys.modules['_socket']\nimport _socket\n"
    "_socket.socket().connect(('127.0.0.1', {port}))",
    "socket class from __subclasses__": SOCKET_CLASS + "kind(2, 1).connect(('127.0.0.1', {port}))",
    "ctypes": CTYPES + "import struct\nfd = libc.socket(2, 1, 0)\n"
    "addr = struct.pack('!HH4s8x', 2, {port}, bytes([127, 0, 0, 1]))\n"
    "addr = struct.pack('=H', 2) + addr[2:]\n"
    "assert libc.connect(fd, addr, len(addr)) == 0, ctypes.get_errno()",
}
GUARD_BYPASSES = {"socket class from __subclasses__", "ctypes"}


def _mode_variant_params(variants: dict[str, str], bypasses: set[str]) -> list:
    return [
        pytest.param(mode, name, marks=_bwrap_mode_marks(mode))
        for mode in ("bubblewrap", "guard")
        for name in sorted(variants)
        if not (mode == "guard" and name in bypasses)
    ]


@pytest.mark.parametrize(("mode", "variant"), _mode_variant_params(CONNECTS, GUARD_BYPASSES))
def test_no_connection_reaches_a_listener_on_loopback(mode: str, variant: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        result = run_program(CONNECTS[variant].format(port=port), mode=mode, timeout_s=60)
        with pytest.raises(BlockingIOError):
            listener.accept()  # a completed connection would be waiting in the backlog
    assert not result.passed


@BWRAP_ONLY
def test_no_datagram_or_abstract_unix_socket_reaches_the_host() -> None:
    name = f"\0fedcolora-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix, socket.socket(
        socket.AF_INET, socket.SOCK_DGRAM
    ) as udp:  # fmt: skip
        unix.bind(name)
        unix.listen()
        unix.setblocking(False)
        udp.bind(("127.0.0.1", 0))
        udp.setblocking(False)
        program = SOCKET_CLASS + (
            f"try:\n    kind(1, 1).connect({name!r})\nexcept OSError:\n    pass\n"
            f"kind(2, 2).sendto(b'hi', ('127.0.0.1', {udp.getsockname()[1]}))\n"
        )
        run_program(program, mode="bubblewrap", timeout_s=60)
        with pytest.raises(BlockingIOError):
            unix.accept()
        with pytest.raises(BlockingIOError):
            udp.recv(16)


WRITES_OUTSIDE = {
    "open /dev/shm": "open({path!r}, 'w').write('left')",
    "SharedMemory": "from multiprocessing import shared_memory\n"
    "shared_memory.SharedMemory(name={name!r}, create=True, size=64)",
    "os.open /dev/shm": "import os\nos.close(os.open({path!r}, os.O_CREAT | os.O_WRONLY))",
    "pathlib touch": "import pathlib\npathlib.Path({path!r}).touch()",
    "ctypes": CTYPES_WRITE,
}


@pytest.mark.parametrize(("mode", "variant"), _mode_variant_params(WRITES_OUTSIDE, {"ctypes"}))
def test_files_in_dev_shm_do_not_outlive_the_run(mode: str, variant: str) -> None:
    name = f"fedcolora-attack-{uuid.uuid4().hex}"
    path = Path("/dev/shm") / name
    try:
        result = run_program(WRITES_OUTSIDE[variant].format(path=str(path), name=name), mode=mode)
        assert not path.exists()
        if mode == "bubblewrap" and variant == "ctypes":
            assert result.passed, result.detail  # written, to the run's own /dev/shm
    finally:
        path.unlink(missing_ok=True)


WRITES_TO_PATHS = {k: v for k, v in WRITES_OUTSIDE.items() if k != "SharedMemory"}


@pytest.mark.parametrize(("mode", "variant"), _mode_variant_params(WRITES_TO_PATHS, {"ctypes"}))
def test_files_in_host_tmp_do_not_outlive_the_run(mode: str, variant: str, open_dir: Path) -> None:
    path = open_dir / "left"
    run_program(WRITES_TO_PATHS[variant].format(path=str(path), name=""), mode=mode)
    assert list(open_dir.iterdir()) == []


DIR_FD_WRITES = {
    "os.open dir_fd": "import os\nfd = os.open({dir!r}, os.O_RDONLY)\n"
    "os.close(os.open('made', os.O_CREAT | os.O_WRONLY, dir_fd=fd))",
    "open with opener": "import os\nfd = os.open({dir!r}, os.O_RDONLY)\n"
    "open('made', 'w', opener=lambda p, f: os.open(p, f, dir_fd=fd)).write('x')",
    "os.mkdir dir_fd": "import os\nfd = os.open({dir!r}, os.O_RDONLY)\nos.mkdir('made', dir_fd=fd)",
    "os.mkdir": "import os\nos.mkdir({dir!r} + '/made')",
    "symlink out": "import os\nos.symlink({dir!r}, 'out')\nopen('out/made', 'w').write('x')",
    "ctypes openat": CTYPES + "fd = libc.open({dir!r}.encode(), 0)\n"
    "assert libc.openat(fd, b'made', 0o101, 0o644) >= 0",
}


@pytest.mark.parametrize(
    ("mode", "variant"), _mode_variant_params(DIR_FD_WRITES, {"ctypes openat"})
)
def test_relative_opens_cannot_create_files_outside_the_work_dir(
    mode: str, variant: str, open_dir: Path
) -> None:
    run_program(DIR_FD_WRITES[variant].format(dir=str(open_dir)), mode=mode)
    assert list(open_dir.iterdir()) == []


SYSTEM_CALLS = {
    "re-imported posix": "import sys\ndel sys.modules['posix']\nimport posix\n"
    "posix.system('touch {marker}')",
    "reloaded os": "import importlib, os\nimportlib.reload(os)\nos.system('touch {marker}')",
    "module_from_spec": "import importlib.util\nspec = importlib.util.find_spec('posix')\n"
    "importlib.util.module_from_spec(spec).system('touch {marker}')",
    "_imp.create_builtin": "import _imp, importlib.util\n"
    "_imp.create_builtin(importlib.util.find_spec('posix')).system('touch {marker}')",
    "re-imported _posixsubprocess": "import sys\ndel sys.modules['_posixsubprocess']\n"
    "import _posixsubprocess, subprocess\nsubprocess.run(['touch', '{marker}'])",
    "ctypes system": CTYPES + "libc.system(b'touch {marker}')",
}


@pytest.mark.parametrize(("mode", "variant"), _mode_variant_params(SYSTEM_CALLS, {"ctypes system"}))
def test_restoring_system_does_not_reach_the_host(mode: str, variant: str, open_dir: Path) -> None:
    marker = open_dir / "pwned"
    result = run_program(SYSTEM_CALLS[variant].format(marker=marker), mode=mode)
    assert not marker.exists()
    if mode == "guard":
        assert result.status == "error" and "sandbox:" in result.detail


@BWRAP_ONLY
def test_the_host_file_system_is_out_of_sight() -> None:
    here = str(Path(__file__).resolve().parents[2])
    program = (
        "import os\n"
        f"for path in ({here!r}, '/work', '/root', '/home', '/var', '/etc/shadow'):\n"
        "    assert not os.path.exists(path), path\n"
        "assert os.listdir('/proc').count('1') == 1 and len([p for p in os.listdir('/proc') "
        "if p.isdigit()]) <= 3\n"
        "import socket\nassert socket.gethostname() == 'sandbox'\n"
    )
    result = run_program(program, mode="bubblewrap")
    assert result.passed, result.detail


@BWRAP_ONLY
def test_the_root_is_read_only_and_each_tmpfs_is_capped() -> None:
    fill = """
import errno
from _io import FileIO  # the guard's open() would refuse /tmp and /dev/shm
assert libc.open(b"/planted", 0o101, 0o644) < 0 and ctypes.get_errno() == errno.EROFS
for where in ("/sandbox", "/tmp", "/dev/shm"):
    written, chunk = 0, b"x" * (1 << 20)
    try:
        for n in range(200):
            with FileIO(f"{where}/fill{n}", "w") as out:
                for _ in range(16):
                    written += out.write(chunk)
    except OSError as error:
        assert error.errno == errno.ENOSPC, error
    assert written <= 64 << 20, (where, written)
"""
    result = run_program(CTYPES + fill, mode="bubblewrap", timeout_s=120)
    assert result.passed, result.detail


# Lines a program writes to the results channel itself, read back by the parent: JSON nested
# past the parent's stack, a body of the wrong JSON type, a float past the float range.
CHANNEL_JUNK = {
    "nested past the stack": "b'[' * 100_000",
    "nested message": "b'{\"i\": 0, \"raised\": ' + b'[' * 990 + b']' * 990 + b'}'",
    "complex body not a list": 'b\'{"i": 0, "value": {"complex": {}}}\'',
    "float past range": 'b\'{"i": 0, "value": {"float": "0x1p99999"}}\'',
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("junk", sorted(CHANNEL_JUNK))
def test_junk_on_the_results_channel_gets_a_verdict(mode: str, junk: str) -> None:
    program = (
        "import os, sys\nchannel = sys._getframe(1).f_locals['job']['channel_fd']\n"
        f"os.write(channel, {CHANNEL_JUNK[junk]} + b'\\n')\n" + WRONG_ADD
    )
    assert check_generation(ADD, program, mode=mode).status in ("failed", "error")
    exits = program + "os._exit(0)\n"  # no record of the harness's own after the junk
    assert check_generation(ADD, exits, mode=mode).status == "error"


# Kernel memory that RLIMIT_AS does not count: files in memory (outside every capped tmpfs)
# and pipe or socket buffers, as many as the program has descriptors. A guarded os.memfd_create
# is refused by the guard, one through ctypes by the seccomp filter; the rest run out of
# descriptors.
KERNEL_MEMORY = {
    "memfd_create": "import os\nos.write(os.memfd_create('m'), b'x' * (1 << 20))",
    "ctypes memfd_create": CTYPES + "import os\nfor _ in range(200):\n"
    "    assert libc.memfd_create(b'm', 0) >= 0, os.strerror(ctypes.get_errno())",
    "pipes": "import os\npipes = [os.pipe() for _ in range(200)]",
    "socket pairs": SOCKET_CLASS + "pairs = []\nfor n in range(100):\n"
    "    server = kind(1, 1)\n    server.bind(f'\\0pair{n}')\n    server.listen()\n"
    "    client = kind(1, 1)\n    client.connect(f'\\0pair{n}')\n"
    "    pairs.append((client, server._accept()))\n    server.close()",
}


@pytest.mark.parametrize(
    ("mode", "variant"), _mode_variant_params(KERNEL_MEMORY, {"socket pairs"})
)  # under the guard the sockets would be the host's
def test_kernel_memory_outside_the_address_space_limit_is_bounded(mode: str, variant: str) -> None:
    result = run_program(KERNEL_MEMORY[variant], mode=mode, timeout_s=60)
    reasons = {"memfd_create": "disabled", "ctypes memfd_create": "Operation not permitted"}
    assert not result.passed and reasons.get(variant, "Too many open files") in result.detail


@pytest.mark.parametrize("mode", MODES)
def test_the_descriptor_cap_leaves_a_busy_evaluator_working(mode: str) -> None:
    """The results channel keeps its number in the child, beyond the cap when the evaluating
    process holds many descriptors (a loaded model, Ray): only new descriptors are capped."""
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(2 * MAX_FILES)]
    try:
        assert check_generation(ADD, ADD.target, mode=mode).status == "passed"
        assert check_generation(ADD, WRONG_ADD, mode=mode).status == "failed"
    finally:
        for descriptor in held:
            os.close(descriptor)


# Text the program controls that reaches the verdict's detail, which reports write as UTF-8.
UNENCODABLE_MESSAGES = {
    "raised in a test call": "def add(a, b):\n    raise ValueError('\\ud800')\n",
    "raised at top level": "raise ValueError('\\udcff')\n",
    "class name": "def add(a, b):\n    return type('\\ud800', (), {})()\n",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", sorted(UNENCODABLE_MESSAGES))
def test_a_detail_with_lone_surrogates_can_be_written_as_utf8(mode: str, variant: str) -> None:
    result = check_generation(ADD, UNENCODABLE_MESSAGES[variant], mode=mode)
    assert result.status in ("failed", "error")
    result.detail.encode("utf-8")  # what EvalReport.save does with it


# What multiplies a run's memory past its per-process RLIMIT_AS, reached through ctypes: more
# processes (each with its own limit, MAX_TASKS of them) and memory that outlives its mapping.
# The seccomp filter refuses each with EPERM (codetasks/sandbox/syscalls.py); the program
# asserts the refusal, so a pass means it was refused and a failure names what got through.
REFUSED_CALL = CTYPES + "assert {call} == -1 and ctypes.get_errno() == 1, ctypes.get_errno()\n"
MEMORY_MULTIPLIERS = {
    "fork": "libc.fork()",  # glibc's fork makes the clone system call, without CLONE_THREAD
    "vfork": "libc.vfork()",
    "memfd_create": "libc.memfd_create(b'm', 0)",
    "SysV shared memory": "libc.shmget(0, 1 << 20, 0o1666)",
    "SysV message queue": "libc.msgget(0, 0o1666)",
}
# A fork bomb whose every process takes most of its address-space limit: under bwrap with
# MAX_TASKS processes, 64 times the run's memory limit. ``fork`` returns -1 at once instead.
MEMORY_FORK_BOMB = (
    CTYPES
    + """
ballast = bytearray(128 << 20)
children = 0
for _ in range(16):
    pid = libc.fork()
    if pid == 0:
        ballast[:] = bytes(len(ballast))  # touch every page: resident, not just reserved
        import time
        time.sleep(30)
    children += pid > 0
assert children == 0, children
"""
)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("call", sorted(MEMORY_MULTIPLIERS))
def test_calls_that_multiply_memory_are_refused(mode: str, call: str) -> None:
    result = run_program(REFUSED_CALL.format(call=MEMORY_MULTIPLIERS[call]), mode=mode)
    assert result.passed, result.detail


@pytest.mark.usefixtures("reaper")
@pytest.mark.parametrize("mode", MODES)
def test_a_fork_bomb_with_ballast_starts_no_process(mode: str) -> None:
    result = run_program(MEMORY_FORK_BOMB, mode=mode, memory_mb=256, timeout_s=60)
    assert result.passed, result.detail
    assert live_children() == set()


THREADS = """
import threading
seen = []
workers = [threading.Thread(target=seen.append, args=(n,)) for n in range(8)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
assert sorted(seen) == list(range(8))
"""


@pytest.mark.parametrize("mode", MODES)
def test_threads_still_start_under_the_filter(mode: str) -> None:
    """clone with CLONE_THREAD is allowed, and clone3's ENOSYS sends glibc back to it."""
    result = run_program(THREADS, mode=mode)
    assert result.passed, result.detail
