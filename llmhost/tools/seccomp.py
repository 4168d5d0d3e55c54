"""A seccomp filter for sandboxed programs, built as a classic BPF program with the standard library.

The filter is installed by the sandbox's launcher inside the child (no-new-privs, then
`prctl(PR_SET_SECCOMP)`), so it holds for the program and everything it starts. It is a deny list on
top of the namespaces and rlimits, for what a Python program never needs and an escape would:

- sockets of any family but AF_UNIX (IPv4, IPv6, netlink, packet, …) → EAFNOSUPPORT, so even the
  `rlimits` mode, which has no network namespace, has no network;
- ptrace, process_vm_readv/writev, mount/umount, pivot_root, chroot, unshare, setns, new namespaces
  through clone flags, bpf, perf_event_open, io_uring, userfaultfd, kernel keyrings, module and kexec
  loading, open_by_handle_at, reboot, swapon/off, acct, settimeofday → EPERM;
- clone3 → ENOSYS (its flags live in memory a filter cannot read; glibc then falls back to clone,
  whose flags the filter checks);
- x32 system calls and any other architecture than the one the filter was built for → kill.

Only x86_64 is described here; elsewhere `build_filter()` returns None and the sandbox says so.
Why hand-written BPF rather than libseccomp: the launcher runs with the system interpreter inside
bubblewrap, where the server's site-packages (pyseccomp) are not mounted; the program is ~100 bytes
of instructions and is checked by the tests that try each blocked call.
"""

from __future__ import annotations

import errno
import platform
import struct

# <linux/filter.h>, <linux/seccomp.h>, <linux/audit.h>
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
_RET_ALLOW = 0x7FFF0000
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000
_OFFSET_NR, _OFFSET_ARCH, _OFFSET_ARG0_LOW = 0, 4, 16

_AF_UNIX = 1
_CLONE_NEW_NAMESPACES = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)

# x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl).
_X86_64 = {
    "socket": 41,
    "clone": 56,
    "clone3": 435,
    "denied": {
        "ptrace": 101,
        "process_vm_readv": 310,
        "process_vm_writev": 311,
        "mount": 165,
        "umount2": 166,
        "pivot_root": 155,
        "chroot": 161,
        "unshare": 272,
        "setns": 308,
        "bpf": 321,
        "perf_event_open": 298,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "userfaultfd": 323,
        "add_key": 248,
        "request_key": 249,
        "keyctl": 250,
        "init_module": 175,
        "finit_module": 313,
        "delete_module": 176,
        "kexec_load": 246,
        "kexec_file_load": 320,
        "open_by_handle_at": 304,
        "reboot": 169,
        "swapon": 167,
        "swapoff": 168,
        "acct": 163,
        "settimeofday": 164,
        "fsopen": 430,
        "fsmount": 432,
        "move_mount": 429,
        "open_tree": 428,
    },
}

DENIED_SYSCALLS = tuple(_X86_64["denied"])


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def _errno(code: int) -> bytes:
    return _insn(_RET_K, _RET_ERRNO | code)


def build_filter(machine: str | None = None) -> bytes | None:
    """The filter program (8-byte `sock_filter` entries), or None where this module has no table."""
    if (machine or platform.machine()) != "x86_64":
        return None
    table = _X86_64
    prog = [
        _insn(_LD_W_ABS, _OFFSET_ARCH),
        _insn(_JEQ_K, _AUDIT_ARCH_X86_64, jt=1, jf=0),
        _insn(_RET_K, _RET_KILL_PROCESS),
        _insn(_LD_W_ABS, _OFFSET_NR),
        _insn(_JGE_K, _X32_SYSCALL_BIT, jt=0, jf=1),
        _insn(_RET_K, _RET_KILL_PROCESS),
    ]
    # socket(family, …): only AF_UNIX. Both branches return, so the accumulator holding arg0 never
    # reaches the checks below.
    prog += [
        _insn(_JEQ_K, table["socket"], jt=0, jf=4),
        _insn(_LD_W_ABS, _OFFSET_ARG0_LOW),
        _insn(_JEQ_K, _AF_UNIX, jt=0, jf=1),
        _insn(_RET_K, _RET_ALLOW),
        _errno(errno.EAFNOSUPPORT),
    ]
    # clone(flags, …): no new namespaces.
    prog += [
        _insn(_JEQ_K, table["clone"], jt=0, jf=4),
        _insn(_LD_W_ABS, _OFFSET_ARG0_LOW),
        _insn(_JSET_K, _CLONE_NEW_NAMESPACES, jt=0, jf=1),
        _errno(errno.EPERM),
        _insn(_RET_K, _RET_ALLOW),
    ]
    prog += [_insn(_JEQ_K, table["clone3"], jt=0, jf=1), _errno(errno.ENOSYS)]
    for number in table["denied"].values():
        prog += [_insn(_JEQ_K, number, jt=0, jf=1), _errno(errno.EPERM)]
    prog.append(_insn(_RET_K, _RET_ALLOW))
    return b"".join(prog)


# Runs inside the child, before the program: install `filter_hex` (the output of `build_filter`).
# prctl numbers: PR_SET_NO_NEW_PRIVS = 38, PR_SET_SECCOMP = 22, SECCOMP_MODE_FILTER = 2.
INSTALL_SNIPPET = """\
def install_seccomp(filter_hex):
    import ctypes
    program = bytes.fromhex(filter_hex)
    buf = ctypes.create_string_buffer(program, len(program))

    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = Fprog(len(program) // 8, ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:
        error = ctypes.get_errno()
        raise SystemExit("llmhost sandbox: could not install the seccomp filter (errno %d)" % error)
"""
