"""Write-restrict the harness child with Linux Landlock, so candidate code cannot touch the user's files.

Candidate code (from an LLM above all) is untrusted. The harness child already runs it in
a scratch directory, with secrets scrubbed and a time limit; this module adds the last
piece of issue #9's rule "never with write access to the user's source": before any user
code is imported, the child restricts *itself* with Landlock (Linux >= 5.13) so that it
may only write under a few roots:

* its scratch directory (its cwd: the request, the result, the phase file, logs),
* the temp directory, unless it holds a file the child must not write (a kernel under
  /tmp, profd's state dir under /tmp): then a private temp directory inside the scratch
  directory replaces it (``TMPDIR`` points there) -- except for a child run under ncu /
  rocprof, whose injected libraries may write /tmp themselves (there a kernel kept under
  /tmp is not protected; kernels under $HOME always are),
* Triton's home (``$TRITON_HOME/.triton``: cache, dumps, overrides) and
  ``TRITON_CACHE_DIR`` / ``TRITON_DUMP_DIR`` / ``TRITON_OVERRIDE_DIR`` when set,
* the user cache (``$XDG_CACHE_HOME`` or ``~/.cache``: torch, inductor, ROCm comgr),
  ``TORCHINDUCTOR_CACHE_DIR`` when set, CUDA's JIT cache (``CUDA_CACHE_PATH`` or ``~/.nv``)
  and, on ROCm machines, MIOpen's user database (``MIOPEN_USER_DB_PATH`` or ``~/.config/miopen``),
* ``/dev``: the GPU device nodes (``/dev/nvidia*``, ``/dev/kfd``, ``/dev/dri``) are opened
  read-write, ``/dev/shm`` holds shared memory, ``/dev/null`` takes output,
* (a candidate's child: none of those shared caches, only ``$PROFD_PRIVATE_CACHE``, the judge's
  directory for that candidate's source; see ``profd.harness.candidate_caches``),
* its own ``/proc/<pid>/task``: CUDA names its threads by writing
  ``/proc/self/task/<tid>/comm``, and ``cuInit`` fails with error 304 when it may not (seen
  by other Landlock users: NVIDIA/OpenShell#710, nolabs-ai/nono#924). The rule is made by
  the child for itself, so it covers its own threads only, never another process's.

Only write-type accesses are *handled* by the ruleset (write, truncate, remove, make
anything, and re-parenting renames), so reading and executing stay allowed everywhere:
the child still imports torch, Triton, the target and its siblings. Anything else -- the
user's kernel directory and source file, profd's store, the rest of $HOME -- becomes
read-only for the child and its descendants; a write fails with EACCES
(``PermissionError``), which the harness reports as the kernel's error.

It is per process and inherited by everything the child starts, so it works the same in a
cold ``python -m profd.harness.child``, in a child forked from the warm worker, and under ncu /
rocprof (the profiler is the child's parent and is not restricted: its report and its own
files in /tmp are written by itself). A cache root or the temp dir that holds a protected
path is left out rather than let the child write the protected path: Landlock rules only
add rights, a sub-tree cannot be carved back out. ``PR_SET_NO_NEW_PRIVS`` (required by Landlock for unprivileged
processes) also means a setuid helper such as ``nvidia-modprobe`` cannot gain privileges
from inside the child: GPU device nodes must exist before profd runs, as they do on any
machine where CUDA already works.

``apply_sandbox`` never raises: on a kernel without Landlock (ENOSYS, EOPNOTSUPP when it is
built in but not enabled in ``lsm=``) it returns ``"unavailable: <reason>"`` and the child
runs unrestricted, with a warning in its Measurement. ``PROFD_SANDBOX=off`` in the
environment disables it the same way (for debugging an unusual GPU stack).
"""

from __future__ import annotations

import ctypes
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional

# Syscall numbers are the same on x86_64 and aarch64 (the unified table, >= 5.13).
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
LANDLOCK_RULE_PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38

# Filesystem access rights (include/uapi/linux/landlock.h).
ACCESS_FS_EXECUTE = 1 << 0
ACCESS_FS_WRITE_FILE = 1 << 1
ACCESS_FS_READ_FILE = 1 << 2
ACCESS_FS_READ_DIR = 1 << 3
ACCESS_FS_REMOVE_DIR = 1 << 4
ACCESS_FS_REMOVE_FILE = 1 << 5
ACCESS_FS_MAKE_CHAR = 1 << 6
ACCESS_FS_MAKE_DIR = 1 << 7
ACCESS_FS_MAKE_REG = 1 << 8
ACCESS_FS_MAKE_SOCK = 1 << 9
ACCESS_FS_MAKE_FIFO = 1 << 10
ACCESS_FS_MAKE_BLOCK = 1 << 11
ACCESS_FS_MAKE_SYM = 1 << 12
ACCESS_FS_REFER = 1 << 13     # ABI 2: rename/link into another directory
ACCESS_FS_TRUNCATE = 1 << 14  # ABI 3: truncate(2), open(O_TRUNC)

#: Write-type rights in ABI 1. READ_FILE, READ_DIR and EXECUTE are never handled, so they
#: stay allowed everywhere; IOCTL_DEV (ABI 5) is not handled either: GPU runtimes live on ioctls.
WRITE_ACCESS_V1 = (ACCESS_FS_WRITE_FILE | ACCESS_FS_REMOVE_DIR | ACCESS_FS_REMOVE_FILE | ACCESS_FS_MAKE_CHAR
                   | ACCESS_FS_MAKE_DIR | ACCESS_FS_MAKE_REG | ACCESS_FS_MAKE_SOCK | ACCESS_FS_MAKE_FIFO
                   | ACCESS_FS_MAKE_BLOCK | ACCESS_FS_MAKE_SYM)
#: Rights a rule on a non-directory may carry (the kernel rejects directory-only rights there).
FILE_ACCESS = ACCESS_FS_EXECUTE | ACCESS_FS_WRITE_FILE | ACCESS_FS_READ_FILE | ACCESS_FS_TRUNCATE


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in the uapi header: 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _RulesetAttr(ctypes.Structure):
    # Only handled_access_fs: the kernel accepts a prefix of the struct (handled_access_net
    # (ABI 4) and scoped (ABI 6) stay 0 = not restricted).
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.prctl.restype = ctypes.c_int
    return libc


def landlock_abi() -> tuple[int, str]:
    """(ABI version, "") when Landlock is usable here, else (0, the reason)."""
    try:
        libc = _libc()
        abi = libc.syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0),
                           ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    except Exception as e:  # no libc.syscall (not Linux/glibc/musl)
        return 0, f"no syscall interface ({type(e).__name__}: {e})"
    if abi < 0:
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            return 0, "this kernel has no Landlock (ENOSYS; Linux >= 5.13 with CONFIG_SECURITY_LANDLOCK)"
        if err == errno.EOPNOTSUPP:
            return 0, "Landlock is built in but not enabled (EOPNOTSUPP; add landlock to the lsm= boot parameter)"
        return 0, f"landlock_create_ruleset failed: {os.strerror(err)}"
    return int(abi), ""


def handled_access(abi: int) -> int:
    """The write-type rights this ABI knows (handling an unknown right is EINVAL)."""
    access = WRITE_ACCESS_V1
    if abi >= 2:
        access |= ACCESS_FS_REFER  # else re-parenting renames (Triton's cache: tmp dir -> cache dir) are denied
    if abi >= 3:
        access |= ACCESS_FS_TRUNCATE  # else truncate(2) on the user's file would stay allowed
    return access


def sandbox_disabled() -> bool:
    """Whether ``PROFD_SANDBOX=off`` (or 0/no/false) turns every restriction of this module off."""
    return os.environ.get("PROFD_SANDBOX", "").strip().lower() in ("0", "off", "no", "false")


def apply_sandbox(write_roots: Iterable[str | Path]) -> str:
    """Make everything but ``write_roots`` read-only for this process and its children.

    Returns ``"landlock ABI N"`` (with the roots that could not be used, if any) or
    ``"unavailable: <reason>"``; never raises. Roots that do not exist are skipped.
    Must be called before the process has other threads (a restriction is per thread and
    inherited only by threads and processes created after it).
    """
    if sandbox_disabled():
        return "unavailable: disabled by PROFD_SANDBOX=off"
    abi, why = landlock_abi()
    if abi <= 0:
        return f"unavailable: {why}"
    try:
        return _restrict(abi, [Path(r) for r in write_roots])
    except Exception as e:  # never let the sandbox cost the measurement
        return f"unavailable: {type(e).__name__}: {e}"


def _restrict(abi: int, roots: list[Path]) -> str:
    failed, added, skipped = _landlock_restrict_self(handled_access(abi), roots)
    if failed:
        return failed
    text = f"landlock ABI {abi}: writes allowed under {added} root(s) only"
    if skipped:
        text += "; not usable: " + ", ".join(skipped)
    return text


def _no_new_privs(libc: ctypes.CDLL) -> Optional[str]:
    """Set PR_SET_NO_NEW_PRIVS (Landlock and seccomp need it); None, or the "unavailable: ..." reason."""
    if libc.prctl(ctypes.c_int(PR_SET_NO_NEW_PRIVS), ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0),
                  ctypes.c_ulong(0)) != 0:
        return f"unavailable: prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}"
    return None


def _landlock_restrict_self(access: int, roots: Iterable[str | Path]) -> tuple[Optional[str], int, list[str]]:
    """Add one Landlock layer to this process: a ruleset handling ``access``, allowed beneath each root.

    A directory root gets all of ``access``; a file root only its file rights (``access &
    FILE_ACCESS``: REFER, READ_DIR and the make/remove rights are directory rights, which the
    kernel rejects on a file). Returns (None or the "unavailable: ..." reason the layer was
    not applied, rules added, roots skipped with why: missing, or refused by the kernel).
    """
    libc = _libc()
    attr = _RulesetAttr(handled_access_fs=access)
    fd = libc.syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), ctypes.byref(attr),
                      ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    if fd < 0:
        return f"unavailable: landlock_create_ruleset: {os.strerror(ctypes.get_errno())}", 0, []
    skipped: list[str] = []
    added = 0
    try:
        for root in dict.fromkeys(roots):
            try:
                pfd = os.open(root, os.O_PATH | os.O_CLOEXEC)
            except OSError as e:
                skipped.append(f"{root} ({e.strerror})")
                continue
            try:
                is_dir = os.path.isdir(root)
                rule = _PathBeneathAttr(allowed_access=access if is_dir else access & FILE_ACCESS, parent_fd=pfd)
                rc = libc.syscall(ctypes.c_long(SYS_LANDLOCK_ADD_RULE), ctypes.c_int(fd),
                                  ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH), ctypes.byref(rule), ctypes.c_uint32(0))
                if rc < 0:
                    skipped.append(f"{root} ({os.strerror(ctypes.get_errno())})")
                else:
                    added += 1
            finally:
                os.close(pfd)
        failed = _no_new_privs(libc)
        if failed:
            return failed, added, skipped
        if libc.syscall(ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(fd), ctypes.c_uint32(0)) < 0:
            return f"unavailable: landlock_restrict_self: {os.strerror(ctypes.get_errno())}", added, skipped
    finally:
        os.close(fd)
    return None, added, skipped


# --------------------------------------------------------------------------- the child's roots


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _real(p: str | Path) -> Path:
    return Path(os.path.realpath(os.path.expanduser(str(p))))


def state_dir_path(env: Optional[dict[str, str]] = None) -> Path:
    """profd's state directory, as ``profd.paths.state_dir`` finds it, without creating it."""
    env = os.environ if env is None else env
    if env.get("PROFD_STATE_DIR"):
        return _real(env["PROFD_STATE_DIR"])
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return _real(os.path.join(base, "profd"))


def cache_roots(env: Optional[dict[str, str]] = None) -> list[Path]:
    """The caches Triton, torch/inductor and the GPU runtimes write while compiling kernels."""
    env = os.environ if env is None else env
    home = os.path.expanduser("~")
    roots = [os.path.join(env.get("TRITON_HOME") or home, ".triton")]
    # PROFD_CUDA_CACHE_DIR / TORCH_EXTENSIONS_DIR: where a CUDA target's extension is built
    # (profd.harness.cuda_build); without them a child with the cache moved could not build.
    roots += [env[k] for k in ("TRITON_CACHE_DIR", "TRITON_DUMP_DIR", "TRITON_OVERRIDE_DIR",
                               "TORCHINDUCTOR_CACHE_DIR", "PROFD_CUDA_CACHE_DIR", "TORCH_EXTENSIONS_DIR")
              if env.get(k)]
    roots.append(env.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"))
    roots.append(env.get("CUDA_CACHE_PATH") or os.path.join(home, ".nv"))
    if os.path.exists("/dev/kfd"):  # ROCm: MIOpen's user performance database
        roots.append(env.get("MIOPEN_USER_DB_PATH") or os.path.join(home, ".config", "miopen"))
    return [_real(r) for r in roots]


#: Set by the judge for a candidate's child: the only cache directory that child may write (see
#: :func:`child_write_roots` and ``profd.harness.tritoncache``).
PRIVATE_CACHE_ENV = "PROFD_PRIVATE_CACHE"


def child_write_roots(scratch: Path, protect: Iterable[str | Path] = (),
                      keep_tmp: bool = False, candidate: bool = False) -> tuple[list[Path], list[str]]:
    """The write roots of a harness child whose scratch directory is ``scratch``.

    ``protect`` are paths the child must never write (the target's directory, the user's
    original directory for a candidate, profd's state dir): a cache root that holds one
    is dropped, and a temp dir that holds one is replaced by ``scratch/tmp`` (this
    process's ``TMPDIR`` and ``tempfile.tempdir`` are pointed there) -- unless
    ``keep_tmp`` (a child under ncu/rocprof, whose injected libraries may write the
    system temp dir themselves). Returns (roots, notes); missing cache directories are
    created (user-only) so that a first compile can fill them.

    ``candidate``: the shared caches stay read-only and the only cache root is
    ``$PROFD_PRIVATE_CACHE``, the judge's directory for this candidate's source. A shared
    cache is loaded without checks by every later run -- profd's runs of the original, the
    user's own jobs -- so a candidate able to write one could plant a binary under the
    original's cache key (Triton's compiled kernels, a ``load_inline`` extension's ``.so``).
    """
    scratch = _real(scratch)
    guarded = [_real(p) for p in protect]
    notes: list[str] = []
    roots = [scratch]
    tmp = _real(tempfile.gettempdir())
    held = [g for g in guarded if _inside(g, tmp) and not _inside(g, scratch)]
    if held and keep_tmp:
        notes.append(f"{tmp} holds {held[0]} but stays writable: this child runs under a profiler")
        roots.append(tmp)
    elif held and not _inside(tmp, scratch):
        private = scratch / "tmp"
        private.mkdir(mode=0o700, exist_ok=True)
        os.environ["TMPDIR"] = str(private)
        tempfile.tempdir = str(private)
        notes.append(f"{tmp} holds {held[0]}, which the child must not write: its temp dir is {private}")
    else:
        roots.append(tmp)
    shared = cache_roots()
    if candidate:
        private = os.environ.get(PRIVATE_CACHE_ENV)
        shared = [_real(private)] if private else []
        notes.append("shared caches read-only; writes go to " + (private or "no cache (none was given)"))
    for root in shared:
        if any(_inside(g, root) for g in guarded):
            notes.append(f"{root} holds a protected path: not writable for the child")
            continue
        if not root.exists():
            try:
                root.mkdir(parents=True, mode=0o700, exist_ok=True)
            except OSError:
                continue
        roots.append(root)
    roots.append(Path("/dev"))  # GPU device nodes are opened O_RDWR; /dev/shm; /dev/null
    roots.append(_real("/proc/self/task"))  # this process's threads' comm (CUDA names its threads)
    return roots, notes


def sandbox_child(target: str | Path, result_path: str | Path, extra_protect: Iterable[str | Path] = (),
                  under_profiler: bool = False, candidate: bool = False) -> tuple[str, list[str]]:
    """Restrict the harness child; returns (description, warnings for its Measurement).

    The child's scratch directory is its cwd (and the directory of its result file);
    protected: the target's directory, ``extra_protect`` (a candidate's original
    directory) and profd's state directory. ``under_profiler``: see ``child_write_roots``'s
    ``keep_tmp``; ``candidate``: its ``candidate`` (private caches only). Never raises.
    """
    try:
        protect = [Path(target).parent, state_dir_path(), *extra_protect]
        roots, notes = child_write_roots(Path.cwd(), protect, keep_tmp=under_profiler, candidate=candidate)
        result_dir = _real(Path(result_path).parent)
        if result_dir not in roots:
            roots.insert(1, result_dir)
        desc = apply_sandbox(roots)
        if notes and not desc.startswith("unavailable"):
            desc += "; " + "; ".join(notes)
    except Exception as e:
        desc = f"unavailable: {type(e).__name__}: {e}"
    warnings = []
    if desc.startswith("unavailable"):
        warnings.append(f"sandbox {desc}. The kernel ran without write restrictions: it could have modified "
                        "files outside its scratch directory, your sources included.")
    return desc, warnings


# --------------------------------------------------------------------------- candidate confinement (issue #14)
#
# Landlock above restricts writes. A candidate (untrusted code) is confined further:
# * reads: a second Landlock layer handles READ_FILE/READ_DIR and allows them everywhere
#   except /proc, where only this process's own directory and a few system-wide files
#   stay readable: no other process's /proc/<pid>/environ, mem, cmdline;
# * seccomp (a small classic-BPF filter, built here with ctypes: no dependency) refuses
#   with EPERM: IPv4/IPv6/packet sockets (no network), kill/tgkill on anything but this
#   process or its own group, tkill, ptrace, process_vm_*, pidfd signals, setsid/setpgid
#   (so the whole group stays killable), io_uring (it would bypass the filter), and every
#   metadata change (chmod, chown, utime*, xattrs), which Landlock does not cover.

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# BPF opcodes
_LD_W_ABS, _JEQ_K, _RET_K = 0x20, 0x15, 0x06
_JGE_K = 0x35

#: Syscall numbers refused outright, per architecture.
_DENY = {
    "x86_64": {"chmod": 90, "fchmod": 91, "fchmodat": 268, "fchmodat2": 452, "chown": 92, "fchown": 93,
               "lchown": 94, "fchownat": 260, "utime": 132, "utimes": 235, "utimensat": 280, "futimesat": 261,
               "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197, "lremovexattr": 198,
               "fremovexattr": 199, "tkill": 200, "ptrace": 101, "process_vm_readv": 310,
               "process_vm_writev": 311, "pidfd_send_signal": 424, "pidfd_open": 434, "pidfd_getfd": 438,
               "io_uring_setup": 425, "setsid": 112, "setpgid": 109},
    "aarch64": {"fchmod": 52, "fchmodat": 53, "fchmodat2": 452, "fchownat": 54, "fchown": 55, "utimensat": 88,
                "setxattr": 5, "lsetxattr": 6, "fsetxattr": 7, "removexattr": 14, "lremovexattr": 15,
                "fremovexattr": 16, "tkill": 130, "ptrace": 117, "process_vm_readv": 270,
                "process_vm_writev": 271, "pidfd_send_signal": 424, "pidfd_open": 434, "pidfd_getfd": 438,
                "io_uring_setup": 425, "setsid": 157, "setpgid": 154},
}
_KILL = {"x86_64": (62, 234), "aarch64": (129, 131)}  # kill, tgkill
#: ioctl: every GPU driver call goes through it (the NVIDIA and AMD device nodes, UVM). Refused in
#: a process that must compile without reaching the GPU (profd.harness.precompile).
_IOCTL = {"x86_64": 16, "aarch64": 29}
_SOCKET = {"x86_64": 41, "aarch64": 198}
_NET_FAMILIES = (2, 10, 17)  # AF_INET, AF_INET6, AF_PACKET


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def _arch() -> str:
    return os.uname().machine


# What a CUDA build needs that a candidate is denied: ninja puts each compiler in its own process
# group (posix_spawn with SETPGROUP: setpgid) and signals those groups; the linker sets its
# output's mode (chmod). The builder runs no candidate Python and only screened flags.
_BUILDER_ALLOWS = ("chmod", "fchmod", "fchmodat", "fchmodat2", "setsid", "setpgid")


def _seccomp_program(pid: int, builder: bool = False, gpu: bool = True) -> list[tuple[int, int, int, int]]:
    """The BPF program: (code, jt, jf, k) tuples. Offsets into seccomp_data: nr 0, arch 4, args 16+8i.

    ``builder``: the CUDA builder's filter (``_BUILDER_ALLOWS`` allowed, any process signalled);
    ``gpu=False``: ioctl refused too, so no GPU driver can be reached."""
    arch = _arch()
    eperm = SECCOMP_RET_ERRNO | errno.EPERM
    kill_nr, tgkill_nr = _KILL[arch]
    own = [pid & 0xFFFFFFFF, (-pid) & 0xFFFFFFFF, 0]
    prog: list[tuple[int, int, int, int]] = [
        (_LD_W_ABS, 0, 0, 4),
        (_JEQ_K, 1, 0, AUDIT_ARCH[arch]),
        (_RET_K, 0, 0, eperm),  # a foreign ABI (x32, i386 via int 0x80): refuse everything
        (_LD_W_ABS, 0, 0, 0),
    ]
    if arch == "x86_64":
        prog += [(_JGE_K, 0, 1, 0x40000000), (_RET_K, 0, 0, eperm)]  # x32 syscalls
    for name, nr in _DENY[arch].items():
        if not (builder and name in _BUILDER_ALLOWS):
            prog += [(_JEQ_K, 0, 1, nr), (_RET_K, 0, 0, eperm)]
    if not gpu:
        # ENOTTY, not EPERM: CPython marks new files close-on-exec with ioctl(FIOCLEX) and falls
        # back to fcntl only on ENOTTY or EACCES (EPERM broke every tempfile); a GPU driver's
        # ioctl fails either way.
        prog += [(_JEQ_K, 0, 1, _IOCTL[arch]), (_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.ENOTTY)]
    # kill(pid, sig) and tgkill(tgid, tid, sig): arg 0 must be this process, its group or 0.
    for nr in (() if builder else (kill_nr, tgkill_nr)):
        prog += [(_JEQ_K, 0, 2 + 2 * len(own) + 1, nr), (_LD_W_ABS, 0, 0, 16)]
        for v in own:
            prog += [(_JEQ_K, 0, 1, v), (_RET_K, 0, 0, SECCOMP_RET_ALLOW)]
        prog += [(_RET_K, 0, 0, eperm), (_LD_W_ABS, 0, 0, 0)]
    # socket(family, ...): no IP or packet sockets. AF_UNIX stays (Python and CUDA use it locally).
    prog += [(_JEQ_K, 0, 1 + 2 * len(_NET_FAMILIES) + 1, _SOCKET[arch]), (_LD_W_ABS, 0, 0, 16)]
    for fam in _NET_FAMILIES:
        prog += [(_JEQ_K, 0, 1, fam), (_RET_K, 0, 0, eperm)]
    prog += [(_RET_K, 0, 0, SECCOMP_RET_ALLOW)]
    prog += [(_RET_K, 0, 0, SECCOMP_RET_ALLOW)]
    return prog


def apply_seccomp(pid: Optional[int] = None, builder: bool = False, gpu: bool = True) -> str:
    """Install the candidate filter (``builder``: the CUDA builder's; ``gpu=False``: no ioctl) on
    this process and all it starts; never raises.

    Returns "seccomp: ..." or "unavailable: <reason>". Requires NO_NEW_PRIVS (set here)."""
    if sandbox_disabled():
        return "unavailable: disabled by PROFD_SANDBOX=off"
    arch = _arch()
    if arch not in AUDIT_ARCH:
        return f"unavailable: no seccomp table for {arch}"
    try:
        prog = _seccomp_program(pid or os.getpid(), builder, gpu)
        arr = (_SockFilter * len(prog))(*[_SockFilter(c, jt, jf, k) for c, jt, jf, k in prog])
        fprog = _SockFprog(len(prog), ctypes.cast(arr, ctypes.POINTER(_SockFilter)))
        libc = _libc()
        failed = _no_new_privs(libc)
        if failed:
            return failed
        if libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(fprog),
                      ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
            return f"unavailable: prctl(PR_SET_SECCOMP): {os.strerror(ctypes.get_errno())}"
    except Exception as e:
        return f"unavailable: {type(e).__name__}: {e}"
    if builder:
        return "seccomp: no network sockets, no ptrace, no reading other processes' memory"
    return ("seccomp: no network sockets, signals only to its own group, no ptrace, no metadata changes"
            + ("" if gpu else ", no ioctl (no GPU)"))


#: /proc entries every process may read (system-wide information, no other process's data).
_PROC_SHARED = ("cpuinfo", "meminfo", "stat", "loadavg", "uptime", "version", "filesystems", "sys", "driver",
                "devices", "mounts", "self/mounts")


def apply_read_restriction() -> str:
    """A second Landlock layer: reads allowed everywhere but other processes' /proc entries."""
    if sandbox_disabled():
        return "unavailable: disabled by PROFD_SANDBOX=off"
    abi, why = landlock_abi()
    if abi <= 0:
        return f"unavailable: {why}"
    access = ACCESS_FS_READ_FILE | ACCESS_FS_READ_DIR
    if abi >= 2:
        # A ruleset that does not handle REFER denies every re-parenting rename (EXDEV): Triton's
        # compile cache renames its tmp dir's files into the cache dir. Handled and allowed here
        # wherever reads are; the write layer still decides where anything may be written.
        access |= ACCESS_FS_REFER
    roots = [os.path.join("/", n) for n in os.listdir("/") if n != "proc"]
    roots += [f"/proc/{os.getpid()}"] + [os.path.join("/proc", n) for n in _PROC_SHARED]
    # Roots that are missing or refused are simply not readable: nothing to report.
    failed, _, _ = _landlock_restrict_self(access, roots)
    if failed:
        return failed
    return "landlock: other processes' /proc entries unreadable"


_confined = False


def confined() -> bool:
    """Whether this process confined itself for candidate code (:func:`confine_candidate`)."""
    return _confined


def confine_candidate(gpu: bool = True) -> dict[str, str]:
    """Everything beyond the write restriction, for a process about to import a candidate.

    ``gpu=False``: the process may not reach a GPU either (a compile-only process).
    Returns {protection: description or "unavailable: ..."} for the Measurement and the report."""
    global _confined
    _confined = True
    reads = apply_read_restriction()
    filt = apply_seccomp(gpu=gpu)
    out = {"other processes' /proc": reads, "network": filt, "signals outside its group": filt,
           "metadata changes": filt}
    if not gpu:
        out["GPU"] = filt
    return out


def confine_builder(target: str | Path, scratch: str | Path) -> str:
    """Confine the process that compiles a candidate's CUDA code (``cuda_build prebuild --confine``).

    A candidate's child may not build (its filter denies what ninja and the linker do), so the
    tuner builds candidates ahead, in a process that runs none of their Python: it may write
    only its scratch directory (its cwd), the temp dir and the build caches, opens no network
    socket and traces nothing; ``target``'s directory and profd's state stay read-only. Never raises."""
    try:
        os.chdir(scratch)
        desc, _ = sandbox_child(target, Path(scratch) / "result")
        return desc + "; " + apply_seccomp(builder=True)
    except Exception as e:
        return f"unavailable: {type(e).__name__}: {e}"


def unenforced(p: dict[str, str]) -> list[str]:
    """The protections of a :func:`protections` table this kernel does not enforce."""
    return [k for k, v in p.items() if not v.startswith("enforced")]


def protections() -> dict[str, str]:
    """What the running kernel can enforce for a candidate, without restricting this process
    (for ``profd doctor`` and the report): {protection: "enforced by ..." or "NOT enforced: why"}."""
    abi, why = landlock_abi()
    off = sandbox_disabled()
    seccomp_ok = _arch() in AUDIT_ARCH
    try:
        seccomp_ok = seccomp_ok and "Seccomp:" in Path("/proc/self/status").read_text()
    except OSError:
        seccomp_ok = False

    def state(ok: bool, how: str, reason: str) -> str:
        if off:
            return "NOT enforced: PROFD_SANDBOX=off"
        return f"enforced ({how})" if ok else f"NOT enforced: {reason}"

    sc_reason = f"no seccomp filter support for {_arch()}" if _arch() not in AUDIT_ARCH else "kernel without seccomp"
    return {
        "writes outside scratch": state(abi > 0, f"Landlock ABI {abi}", why),
        "other processes' /proc": state(abi > 0, f"Landlock ABI {abi}", why),
        "network": state(seccomp_ok, "seccomp", sc_reason),
        "signals outside its group": state(seccomp_ok, "seccomp", sc_reason),
        "metadata changes": state(seccomp_ok, "seccomp", sc_reason),
        "secrets in the environment": "enforced (scrubbed by name and by value)",
    }
