"""The seccomp filter's program and how it reaches a run (codetasks/sandbox/syscalls.py); what
it refuses is tested on hostile programs in test_sandbox_attacks.py."""

from __future__ import annotations

import builtins
import os

import pytest

from codetasks.sandbox import syscalls


def test_the_program_is_whole_bpf_instructions_and_each_run_reads_all_of_it() -> None:
    bpf = syscalls.program()
    assert bpf and len(bpf) % 8 == 0  # struct sock_filter is 8 bytes
    fds = [syscalls.program_fd() for _ in range(2)]  # runs side by side: one pipe each
    try:
        assert [os.read(fd, 1 << 16) for fd in fds] == [bpf, bpf]
        assert [os.read(fd, 1) for fd in fds] == [b"", b""]  # written whole, then closed
    finally:
        for fd in fds:
            os.close(fd)


def test_without_libseccomp_runs_go_on_unfiltered_and_say_so(monkeypatch) -> None:
    real_import = builtins.__import__

    def no_libseccomp(name, *args, **kwargs):
        if name == "pyseccomp":
            raise RuntimeError("Unable to find libseccomp")  # what pyseccomp raises
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_libseccomp)
    syscalls.program.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="libseccomp2"):
            assert syscalls.program() is None
        assert syscalls.program_fd() is None
        syscalls.installer()()  # installs nothing, raises nothing
    finally:
        syscalls.program.cache_clear()
