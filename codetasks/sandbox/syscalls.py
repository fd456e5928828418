"""The seccomp filter of a sandboxed program: the system calls that would multiply its memory.

Every rlimit is per process. ``RLIMIT_AS`` bounds one address space, so a program that may
start processes has ``MAX_TASKS`` times its memory limit (64 GB at the default 1 GB, on a
machine with a third of that), and kernel objects that live outside any address space (a
memfd, a SysV shared-memory segment or message queue) are not counted at all. ``ctypes``
reaches all of them past the in-process guard. A seccomp-BPF filter
(https://www.kernel.org/doc/html/latest/userspace-api/seccomp_filter.html), built with
libseccomp through ``pyseccomp`` and installed by bubblewrap (``--seccomp FD``) just before
the program starts, refuses them in the kernel:

- ``fork``, ``vfork`` and ``clone`` without ``CLONE_THREAD``: a new process, with its own
  address-space limit. Threads stay allowed: they share the one address space.
- ``clone3`` fails with ``ENOSYS``, not ``EPERM``: its flags sit in a struct that a filter
  cannot read, and glibc then falls back to ``clone`` for threads.
- ``memfd_create``, ``shmget`` and ``msgget``: memory that outlives every mapping of it.

Everything else is allowed: the filter bounds resources, the namespaces and the guard do the
rest. Calls of another architecture (x32, i386) kill the process, libseccomp's default.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import tempfile
import warnings
from collections.abc import Callable

REFUSED = ("fork", "vfork", "memfd_create", "shmget", "msgget")
_CLONE_THREAD = 0x00010000  # <linux/sched.h>
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2  # prctl(2)
_SOCK_FILTER_BYTES = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k


@functools.cache
def program() -> bytes | None:
    """The filter as a BPF program (what ``bwrap --seccomp`` reads), or ``None``, with a
    warning, where libseccomp is missing: the other limits then stand alone."""
    try:
        import pyseccomp as seccomp
    except (ImportError, RuntimeError) as error:  # RuntimeError: no libseccomp.so
        warnings.warn(
            f"sandbox: no seccomp filter ({error}); a program can start processes and "
            "kernel memory past its memory limit (install Debian's `libseccomp2`)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    refuse = seccomp.ERRNO(errno.EPERM)
    for name in REFUSED:
        rules.add_rule(refuse, name)
    rules.add_rule(refuse, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_THREAD, 0))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as out:
        rules.export_bpf(out)
        out.seek(0)
        return out.read()


def program_fd() -> int | None:
    """The read end of a fresh pipe holding :func:`program`, for one run's ``bwrap --seccomp``,
    which reads it to the end (the caller closes it); ``None`` without a filter."""
    bpf = program()
    if bpf is None:
        return None
    read, write = os.pipe()
    try:
        os.write(write, bpf)  # a few hundred bytes: well within a pipe's buffer
    finally:
        os.close(write)
    return read


def installer() -> Callable[[], None]:
    """A function that installs the filter in the calling process (the guard mode's child,
    before it executes the interpreter). It only makes two ``prctl`` calls: everything is
    allocated here, in the parent, since a child forked from a threaded parent must not."""
    bpf = program()
    if bpf is None:
        return lambda: None

    class SockFprog(ctypes.Structure):  # struct sock_fprog, <linux/filter.h>
        _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_char_p))

    fprog = SockFprog(len(bpf) // _SOCK_FILTER_BYTES, bpf)  # keeps ``bpf`` alive with it
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def install() -> None:
        # no_new_privs lets an unprivileged process install a filter; a kernel that refuses
        # one leaves the other limits, as where libseccomp is missing.
        prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0)

    return install
