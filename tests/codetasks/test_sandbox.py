"""The execution sandbox: correct code passes, wrong code fails, hostile code is contained,
in both modes (bubblewrap, and the guard fallback). Section-3 attacks of issue 14 are in
``test_sandbox_attacks.py``; the verdict's integrity in ``test_sandbox_verdict.py``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codetasks.examples import Example
from codetasks.sandbox import (
    SandboxResult,
    build_program,
    check_generation,
    isolation,
    privilege_drop_active,
    run_program,
    sandbox_mode,
)
from codetasks.sandbox.isolation import SANDBOX_HOME
from tests.codetasks.sandbox_support import BWRAP_WORKS, IN_CI, MODES, live_children

REPO_ROOT = Path(__file__).resolve().parents[2]
NEEDS_DROP = pytest.mark.skipif(
    not privilege_drop_active(), reason="kernel-level isolation needs root (uid drop)"
)

MBPP = Example(
    task="generation",
    uid="mbpp/t1",
    source="Write a function to add two numbers.",
    target="def add(a, b):\n    return a + b\n",
    tests=("assert add(1, 2) == 3", "assert add(-1, 1) == 0"),
    test_setup="import math",
)
HUMANEVAL = Example(
    task="generation",
    uid="humaneval/t1",
    source='def double(x):\n    """Return 2x."""\n',
    target="    return 2 * x\n",
    tests=("def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(0) == 0\n",),
    entry_point="double",
)


def _contained(result: SandboxResult) -> None:
    """Not passed, and (with the ``reaper`` fixture) nothing it started is left running."""
    assert not result.passed
    assert result.status in {"failed", "error", "timeout"}
    assert live_children() == set()


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


def test_bubblewrap_is_used_where_it_works() -> None:
    if IN_CI:
        assert BWRAP_WORKS, "CI must run the sandbox under bubblewrap"
    assert sandbox_mode() == ("bubblewrap" if BWRAP_WORKS else "guard")
    with pytest.raises(ValueError, match="unknown sandbox mode"):
        run_program("pass", mode="chroot")


def test_without_bwrap_the_guard_runs_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation.shutil, "which", lambda name: None)
    isolation.best_mode.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="in-process guard only"):
            assert sandbox_mode() == "guard"
        result = check_generation(MBPP, "def add(a, b):\n    return a + b")
        assert (result.passed, result.mode) == (True, "guard")
        with pytest.raises(RuntimeError, match="bubblewrap does not work"):
            run_program("pass", mode="bubblewrap")
    finally:
        isolation.best_mode.cache_clear()


def test_build_program_mbpp_joins_setup_code_and_asserts() -> None:
    program = build_program(MBPP, "def add(a, b):\n    return a + b")
    assert program == (
        "import math\n\ndef add(a, b):\n    return a + b\n\n"
        "assert add(1, 2) == 3\n\nassert add(-1, 1) == 0\n"
    )


def test_build_program_humaneval_calls_check_on_entry_point() -> None:
    program = build_program(HUMANEVAL, "def double(x):\n    return 2 * x")
    assert program.endswith("assert candidate(0) == 0\n\n\ncheck(double)\n")


def test_build_program_without_tests_is_an_error() -> None:
    with pytest.raises(ValueError, match="no tests"):
        build_program(Example(task="generation", uid="x/1", source="s", target="t"), "pass")


def test_correct_mbpp_solution_passes(mode: str) -> None:
    result = check_generation(MBPP, "def add(a, b):\n    return a + b", mode=mode)
    assert (result.status, result.passed, result.mode) == ("passed", True, mode)
    assert 0 < result.seconds < 10


def test_wrong_mbpp_solution_fails_with_assertion(mode: str) -> None:
    result = check_generation(MBPP, "def add(a, b):\n    return a - b", mode=mode)
    assert (result.status, result.passed) == ("failed", False)
    assert (
        result.detail.splitlines()[-1] == "AssertionError: test 1 (add(1, 2)) gave -1, expected 3"
    )


def test_humaneval_check_function_scores_both_ways(mode: str) -> None:
    assert check_generation(HUMANEVAL, "def double(x):\n    return x + x", mode=mode).passed
    wrong = check_generation(HUMANEVAL, "def double(x):\n    return x", mode=mode)
    assert wrong.status == "failed"


def test_exceptions_and_syntax_errors_are_errors(mode: str) -> None:
    assert run_program("raise ValueError('boom')", mode=mode).status == "error"
    result = run_program("def broken(:\n    pass", mode=mode)
    assert result.status == "error" and "SyntaxError" in result.detail


def test_early_exit_cannot_skip_the_tests(mode: str) -> None:
    for exit_call in ("import sys\nsys.exit(0)", "raise SystemExit", "import os\nos._exit(0)"):
        result = check_generation(MBPP, f"def add(a, b):\n    return 0\n{exit_call}", mode=mode)
        assert result.status == "error", exit_call
        assert "exited before its tests finished" in result.detail
    # `python -S` skips `site`, which is what defines the interactive exit()/quit().
    assert "NameError" in check_generation(MBPP, "exit(0)", mode=mode).detail


def test_program_may_write_in_its_own_directory_which_is_deleted(mode: str) -> None:
    program = "open('scratch.txt', 'w').write('hi')\nassert open('scratch.txt').read() == 'hi'"
    assert run_program(program, mode=mode).passed
    program = "import os, sys\nsys.stderr.write(os.getcwd())\nraise SystemExit(3)"
    workdir = run_program(program, mode=mode).detail.strip().splitlines()[0]
    if mode == "bubblewrap":
        assert workdir == SANDBOX_HOME  # a tmpfs of its own, gone with its mount namespace
    else:
        assert "fedcolora-sbx-" in workdir and not os.path.exists(workdir)


def test_ordinary_file_work_in_the_work_dir_is_allowed(mode: str) -> None:
    program = (
        "import os\nos.mkdir('d', 0o755)\nos.makedirs('d/e/f', exist_ok=True)\n"
        "fd = os.open('d/e/f/x', os.O_CREAT | os.O_WRONLY, 0o644)\nos.write(fd, b'hi')\n"
        "os.close(fd)\nassert open('d/e/f/x', 'r', -1).read() == 'hi'\n"
    )
    result = run_program(program, mode=mode)
    assert result.passed, result.detail


def test_a_later_run_does_not_see_an_earlier_runs_files(mode: str) -> None:
    leave = "open('left.txt', 'w').write('x')\nopen('/tmp/left.txt', 'w').write('x')"
    run_program(leave, mode=mode)
    look = "import os\nassert not any(map(os.path.exists, ['left.txt', '/tmp/left.txt']))"
    assert run_program(look, mode=mode).passed


def test_environment_is_scrubbed(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv("FEDCOLORA_TEST_SECRET", "hunter2")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    program = (
        "import os\nassert 'FEDCOLORA_TEST_SECRET' not in os.environ\n"
        "assert not any('proxy' in key.lower() for key in os.environ)\n"
        "allowed = {'PATH', 'LANG', 'HOME', 'TMPDIR', 'LC_CTYPE', 'PWD'}\n"
        "assert set(os.environ) <= allowed, os.environ"
    )
    assert run_program(program, mode=mode).passed


@NEEDS_DROP
def test_child_runs_unprivileged(mode: str) -> None:
    program = "import os\nassert os.getuid() != 0 and os.getgid() != 0"
    assert run_program(program, mode=mode).passed


@pytest.mark.usefixtures("reaper")
def test_infinite_loop_times_out_within_two_seconds_of_the_limit(mode: str) -> None:
    start = time.monotonic()
    result = run_program("while True:\n    pass", timeout_s=1.0, mode=mode)
    assert time.monotonic() - start < 3.0
    assert result.status == "timeout"
    _contained(result)


def test_sleeping_program_times_out(mode: str) -> None:
    result = run_program("import time\ntime.sleep(60)", timeout_s=0.5, mode=mode)
    assert result.status == "timeout" and result.seconds < 2.5


def test_cpu_limit_stops_a_busy_program_before_the_wall_clock(mode: str) -> None:
    # One CPU second accrues long before 120 wall seconds, however loaded the machine.
    result = run_program("while True:\n    pass", timeout_s=120.0, cpu_s=1, mode=mode)
    assert result.status == "timeout" and result.seconds < 120


@pytest.mark.usefixtures("reaper")
def test_os_fork_bomb_is_contained(mode: str) -> None:
    result = run_program("import os\nwhile True:\n    os.fork()", timeout_s=3.0, mode=mode)
    _contained(result)
    assert "os.fork is disabled" in result.detail


@pytest.mark.usefixtures("reaper")
def test_multiprocessing_fork_bomb_is_contained(mode: str) -> None:
    program = (
        "import multiprocessing\n\ndef bomb():\n    while True:\n"
        "        multiprocessing.Process(target=bomb).start()\n\nbomb()\n"
    )
    for method in ("fork", "spawn"):
        result = run_program(f"import multiprocessing\nmultiprocessing.set_start_method("
                             f"'{method}')\n{program}", timeout_s=3.0, mode=mode)  # fmt: skip
        _contained(result)


@pytest.mark.usefixtures("reaper")
@NEEDS_DROP
def test_ctypes_fork_bomb_bypassing_the_guard_is_capped_and_killed(mode: str) -> None:
    program = (
        "import sys\nsys.modules.pop('ctypes', None)\nsys.modules.pop('_ctypes', None)\n"
        "import ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    libc.fork()\n"
    )
    start = time.monotonic()
    result = run_program(program, timeout_s=1.0, mode=mode)
    assert result.status == "timeout" and time.monotonic() - start < 6
    _contained(result)
    assert run_program("assert True", mode=mode).passed  # the process cap is free again


def test_memory_exhaustion_is_contained(mode: str) -> None:
    result = run_program("blob = bytearray(50 * 1024**3)", mode=mode)
    assert result.status == "error" and "MemoryError" in result.detail
    program = "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))"
    growing = run_program(program, memory_mb=256, mode=mode)
    assert growing.status == "error" and "MemoryError" in growing.detail


HOST_ATTACKS = {
    "os.remove": "import os\nos.remove({file!r})",
    "os.unlink": "import posix\nposix.unlink({file!r})",
    "os.rename": "import os\nos.rename({file!r}, {file!r} + '.moved')",
    "shutil.rmtree": "import shutil\nshutil.rmtree({dir!r})",
    "os.system": "import os\nos.system('rm -rf ' + {dir!r})",
    "subprocess": "import subprocess\nsubprocess.run(['rm', '-rf', {dir!r}])",
    "open(w)": "open({file!r}, 'w').write('pwned')",
    "pathlib": "import pathlib\npathlib.Path({file!r}).write_text('pwned')",
    "os.open": "import os\nos.open({file!r}, os.O_WRONLY | os.O_TRUNC)",
    "os.truncate": "import os\nos.truncate({file!r}, 0)",
}
BYPASS_ATTACKS = {
    "_io.FileIO": "import _io\n_io.FileIO({file!r}, 'w')",
    "ctypes": "import sys\nsys.modules.pop('ctypes', None)\nsys.modules.pop('_ctypes', None)\n"
    "import ctypes\nassert ctypes.CDLL(None).unlink({file!r}.encode()) == 0",
}


def _attack_host_file(tmp_path: Path, template: str, mode: str) -> None:
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("precious")
    result = run_program(template.format(file=str(sentinel), dir=str(tmp_path)), mode=mode)
    _contained(result)
    assert sentinel.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sentinel.txt"]


@pytest.mark.usefixtures("reaper")
@pytest.mark.parametrize("name", sorted(HOST_ATTACKS))
def test_host_files_survive_guarded_attacks(tmp_path: Path, name: str, mode: str) -> None:
    _attack_host_file(tmp_path, HOST_ATTACKS[name], mode)


@pytest.mark.usefixtures("reaper")
@NEEDS_DROP
@pytest.mark.parametrize("name", sorted(BYPASS_ATTACKS))
def test_host_files_survive_attacks_that_bypass_the_guard(
    tmp_path: Path, name: str, mode: str
) -> None:
    _attack_host_file(tmp_path, BYPASS_ATTACKS[name], mode)


@pytest.mark.usefixtures("reaper")
def test_killing_the_parent_directly_leaves_pytest_running(mode: str) -> None:
    result = run_program("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", mode=mode)
    _contained(result)
    assert "os.kill is disabled" in result.detail


PARENT_KILLS = {
    "os.kill": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
    "posix.kill": "import os, posix, signal\nposix.kill(os.getppid(), signal.SIGKILL)",
    "os.killpg": "import os, signal\nos.killpg(os.getpgid(os.getppid()), signal.SIGKILL)",
    "pidfd": "import os, signal\n"
    "signal.pidfd_send_signal(os.pidfd_open(os.getppid()), signal.SIGKILL)",
}
CTYPES_KILL = (
    "import os, sys\nsys.modules.pop('ctypes', None)\nsys.modules.pop('_ctypes', None)\n"
    "import ctypes\nassert ctypes.CDLL(None).kill(os.getppid(), 9) == 0\n"
)


def _status_seen_by_a_sacrificial_parent(program: str, mode: str) -> str:
    """Run ``program`` from a helper process: if the kill lands, the helper dies, not pytest."""
    helper = (
        "import os, sys\nfrom codetasks.sandbox import run_program\n"
        "program = sys.stdin.read().replace('HELPER_PID', str(os.getpid()))\n"
        f"print(run_program(program, timeout_s=5, mode={mode!r}).status)"
    )
    done = subprocess.run(
        [sys.executable, "-c", helper], input=program, capture_output=True, text=True,
        cwd=REPO_ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("name", sorted(PARENT_KILLS))
def test_parent_survives_kill_attempts(name: str, mode: str) -> None:
    assert _status_seen_by_a_sacrificial_parent(PARENT_KILLS[name], mode) == "error"


@NEEDS_DROP
def test_parent_survives_a_ctypes_kill_that_bypasses_the_guard(mode: str) -> None:
    # The helper's host PID: under the guard the kernel refuses `nobody` the kill; under
    # bubblewrap that PID is not in the namespace at all. Either way the kill fails.
    program = CTYPES_KILL.replace("os.getppid()", "HELPER_PID")
    assert _status_seen_by_a_sacrificial_parent(program, mode) == "failed"


def _live_parents() -> dict[int, int]:
    """{pid: parent pid} of every live (non-zombie) process."""
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(pid)] = int(fields[1])
    return parents


def _descendants(root: int) -> set[int]:
    """Live processes below ``root``, by walking parent links in /proc."""
    parents = _live_parents()
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _running_harness(pids: set[int]) -> bool:
    """Whether one of ``pids`` is the sandboxed interpreter itself (not bwrap, whose command
    line holds the same arguments), asleep in the program."""
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if argv[1:4] == [b"-I", b"-S", b"-c"] and state == "S":
            return True
    return False


def _wait_until(condition, safety_s: float = 30.0) -> bool:
    """Poll ``condition``; the limit is a safety net, never what a test asserts on."""
    deadline = time.monotonic() + safety_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_run_dies_with_the_process_that_started_it(mode: str) -> None:
    helper = (
        "from codetasks.sandbox import run_program\n"
        f"run_program('import time\\ntime.sleep(120)', timeout_s=120, mode={mode!r})"
    )
    proc = subprocess.Popen([sys.executable, "-c", helper], cwd=REPO_ROOT)
    try:
        assert _wait_until(lambda: _running_harness(_descendants(proc.pid)))
        sandboxed = _descendants(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert sandboxed
    assert _wait_until(lambda: not sandboxed & set(_live_parents()))
