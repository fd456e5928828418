"""The execution sandbox: correct code passes, wrong code fails, hostile code is contained."""

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
    privilege_drop_active,
    run_program,
)

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


def _live_sandbox_processes() -> list[str]:
    """PIDs of running (non-zombie) processes whose command line names a sandbox dir."""
    live = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"fedcolora-sbx-" in cmdline and state != "Z":
            live.append(pid)
    return live


def _contained(result: SandboxResult) -> None:
    assert not result.passed
    assert result.status in {"failed", "error", "timeout"}
    deadline = time.monotonic() + 3
    while _live_sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _live_sandbox_processes() == []


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


def test_correct_mbpp_solution_passes() -> None:
    result = check_generation(MBPP, "def add(a, b):\n    return a + b")
    assert (result.status, result.passed) == ("passed", True)
    assert 0 < result.seconds < 10


def test_wrong_mbpp_solution_fails_with_assertion() -> None:
    result = check_generation(MBPP, "def add(a, b):\n    return a - b")
    assert (result.status, result.passed) == ("failed", False)
    assert result.detail.splitlines()[-1] == "AssertionError"


def test_humaneval_check_function_scores_both_ways() -> None:
    assert check_generation(HUMANEVAL, "def double(x):\n    return x + x").passed
    assert check_generation(HUMANEVAL, "def double(x):\n    return x").status == "failed"


def test_exceptions_and_syntax_errors_are_errors() -> None:
    assert run_program("raise ValueError('boom')").status == "error"
    result = run_program("def broken(:\n    pass")
    assert result.status == "error" and "SyntaxError" in result.detail


def test_early_exit_cannot_skip_the_tests() -> None:
    for exit_call in ("import sys\nsys.exit(0)", "raise SystemExit", "import os\nos._exit(0)"):
        result = check_generation(MBPP, f"def add(a, b):\n    return 0\n{exit_call}")
        assert result.status == "error", exit_call
        assert "exited before its tests finished" in result.detail
    # `python -S` skips `site`, which is what defines the interactive exit()/quit().
    assert "NameError" in check_generation(MBPP, "exit(0)").detail


def test_program_may_write_in_its_own_directory_which_is_deleted(tmp_path: Path) -> None:
    program = "open('scratch.txt', 'w').write('hi')\nassert open('scratch.txt').read() == 'hi'"
    assert run_program(program).passed
    result = run_program("import os, sys\nsys.stderr.write(os.getcwd())\nraise SystemExit(3)")
    workdir = result.detail.strip().splitlines()[0]
    assert "fedcolora-sbx-" in workdir and not os.path.exists(workdir)


def test_environment_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDCOLORA_TEST_SECRET", "hunter2")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    program = (
        "import os\nassert 'FEDCOLORA_TEST_SECRET' not in os.environ\n"
        "assert not any('proxy' in key.lower() for key in os.environ)\n"
        "assert set(os.environ) <= {'PATH', 'LANG', 'HOME', 'TMPDIR', 'LC_CTYPE'}, os.environ"
    )
    assert run_program(program).passed


@NEEDS_DROP
def test_child_runs_unprivileged() -> None:
    assert run_program("import os\nassert os.getuid() != 0 and os.getgid() != 0").passed


def test_infinite_loop_times_out_within_two_seconds_of_the_limit() -> None:
    start = time.monotonic()
    result = run_program("while True:\n    pass", timeout_s=1.0)
    assert time.monotonic() - start < 3.0
    assert result.status == "timeout"
    _contained(result)


def test_sleeping_program_times_out() -> None:
    result = run_program("import time\ntime.sleep(60)", timeout_s=0.5)
    assert result.status == "timeout" and result.seconds < 2.5


def test_cpu_limit_stops_a_busy_program_before_the_wall_clock() -> None:
    result = run_program("while True:\n    pass", timeout_s=30.0, cpu_s=1)
    assert result.status == "timeout" and result.seconds < 5


def test_os_fork_bomb_is_contained() -> None:
    result = run_program("import os\nwhile True:\n    os.fork()", timeout_s=3.0)
    _contained(result)
    assert "os.fork is disabled" in result.detail


def test_multiprocessing_fork_bomb_is_contained() -> None:
    program = (
        "import multiprocessing\n\ndef bomb():\n    while True:\n"
        "        multiprocessing.Process(target=bomb).start()\n\nbomb()\n"
    )
    for method in ("fork", "spawn"):
        result = run_program(f"import multiprocessing\nmultiprocessing.set_start_method("
                             f"'{method}')\n{program}", timeout_s=3.0)  # fmt: skip
        _contained(result)


@NEEDS_DROP
def test_ctypes_fork_bomb_bypassing_the_guard_is_capped_and_killed() -> None:
    program = (
        "import sys\nsys.modules.pop('ctypes', None)\nsys.modules.pop('_ctypes', None)\n"
        "import ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    libc.fork()\n"
    )
    start = time.monotonic()
    result = run_program(program, timeout_s=1.0)
    assert result.status == "timeout" and time.monotonic() - start < 6
    _contained(result)
    assert run_program("assert True").passed  # the process cap is free again


def test_memory_exhaustion_is_contained() -> None:
    result = run_program("blob = bytearray(50 * 1024**3)")
    assert result.status == "error" and "MemoryError" in result.detail
    growing = run_program(
        "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))", memory_mb=256
    )
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


def _attack_host_file(tmp_path: Path, template: str) -> None:
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("precious")
    result = run_program(template.format(file=str(sentinel), dir=str(tmp_path)))
    _contained(result)
    assert sentinel.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sentinel.txt"]


@pytest.mark.parametrize("name", sorted(HOST_ATTACKS))
def test_host_files_survive_guarded_attacks(tmp_path: Path, name: str) -> None:
    _attack_host_file(tmp_path, HOST_ATTACKS[name])


@NEEDS_DROP
@pytest.mark.parametrize("name", sorted(BYPASS_ATTACKS))
def test_host_files_survive_attacks_that_bypass_the_guard(tmp_path: Path, name: str) -> None:
    _attack_host_file(tmp_path, BYPASS_ATTACKS[name])


def test_killing_the_parent_directly_leaves_pytest_running() -> None:
    result = run_program("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")
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


def _status_seen_by_a_sacrificial_parent(program: str) -> str:
    """Run ``program`` from a helper process: if the kill lands, the helper dies, not pytest."""
    helper = (
        "import sys\nfrom codetasks.sandbox import run_program\n"
        "print(run_program(sys.stdin.read(), timeout_s=5).status)"
    )
    done = subprocess.run(
        [sys.executable, "-c", helper], input=program, capture_output=True, text=True,
        cwd=REPO_ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("name", sorted(PARENT_KILLS))
def test_parent_survives_kill_attempts(name: str) -> None:
    assert _status_seen_by_a_sacrificial_parent(PARENT_KILLS[name]) == "error"


@NEEDS_DROP
def test_parent_survives_a_ctypes_kill_that_bypasses_the_guard() -> None:
    assert _status_seen_by_a_sacrificial_parent(CTYPES_KILL) == "failed"
