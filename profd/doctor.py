"""``profd doctor``: is everything profd depends on in working order?

Each check is small and independent and says, when it fails, what to do. The
checks never touch the GPU from this process (NVML only, the rest in children).
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from profd.config import Config


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_state_dir() -> Check:
    from profd.paths import state_dir
    from profd.store import Store

    try:
        d = state_dir()
        with Store() as s:
            s.count_runs()
        loose = [p.name for p in [d, d / "profd.db"] if p.exists() and stat.S_IMODE(p.stat().st_mode) & 0o077]
        if loose:
            return Check("state", False, f"{d}: {', '.join(loose)} readable by others",
                         f"chmod 700 {d} && chmod 600 {d}/profd.db")
        free = shutil.disk_usage(d).free
        if free < 200 << 20:
            return Check("state", False, f"{d}: only {free >> 20} MiB free", "free disk space for results and captures")
        return Check("state", True, f"{d} (user-only, {free >> 30} GiB free)")
    except Exception as e:
        return Check("state", False, f"{type(e).__name__}: {e}", "set PROFD_STATE_DIR to a writable directory")


def check_gpu() -> Check:
    from profd.gpu import gpu_summary

    has, line = gpu_summary()
    if not has:
        return Check("gpu", False, line, "install the NVIDIA driver (nvidia-smi must work) or ROCm; without a GPU "
                                         "profd still verifies kernels in Triton's CPU interpreter")
    import hwspecs

    d = hwspecs.detect()
    if not d.usable_by_torch:
        return Check("gpu", False, f"{line}; but torch cannot use it: {d.message}",
                     "install a CUDA/ROCm build of torch matching the driver")
    spec = d.spec.key if d.spec else "no database entry (datasheet roofline unavailable)"
    return Check("gpu", True, f"{d.name}, CC {d.compute_capability}, {d.sm_count} SMs; database: {spec}")


def check_profiler(has_gpu: bool) -> Check:
    """Is some registered profiler (``collectors``' wrapping collectors) installed, and can it read counters?"""
    import collectors
    from collectors.errors import CaptureError

    wrappers = collectors.wrappers()
    found = [(c, exe) for c in wrappers for exe in [c.find() if c.find else None] if exe]
    if not found:
        names = " nor ".join(c.name for c in wrappers) or "no profiler"
        fixes = "; or ".join(c.install for c in wrappers if c.install)
        return Check("profiler", False, f"neither {names} found" if len(wrappers) > 1 else f"{names} not found",
                     f"{fixes}; timing and verification work without it")
    listed = ", ".join(f"{c.name} ({exe})" for c, exe in found)
    if not has_gpu:
        return Check("profiler", True, f"found {listed}; counters not tried (no GPU)", skipped=True)
    from profd.flow.capture import capture_counters

    collector, exe = found[0]
    probe = Path(__file__).resolve().parents[1] / "examples" / "kernels" / "vector_add.py"
    try:
        table, secs = capture_counters(probe, backend=collector.backends[0], timeout_s=300)
        return Check("profiler", True, f"{exe}: read {len(table.frame.columns) - 1} counters of "
                     f"{', '.join(table.kernels())} in {secs:.1f} s")
    except CaptureError as e:
        return Check("profiler", False, str(e), "see systemd/INSTALL.md, 'Letting profd read GPU counters'")


def check_llm(cfg: Config) -> Check:
    if not cfg.llm.get("base_url"):
        return Check("llm", True, "not configured: the deterministic advisor works without one", skipped=True)
    try:
        from advisors.rewriters.llm.config import LLMConfig
        from openai import OpenAI

        lc = LLMConfig.from_mapping(cfg.llm)
        key = lc.resolve_api_key(dict(os.environ)) or "none"
        t0 = time.time()
        models = OpenAI(base_url=lc.base_url, api_key=key, timeout=min(lc.timeout_s, 15), max_retries=0).models.list()
        names = [m.id for m in models.data][:5]
        ok = lc.model in names or not names
        return Check("llm", ok, f"{lc.base_url} answered in {time.time() - t0:.1f} s; models: {', '.join(names) or '?'}",
                     "" if ok else f"model {lc.model!r} is not served there: set [llm] model to one of these")
    except Exception as e:
        msg = str(e).replace(os.environ.get(cfg.llm.get("api_key_env", "PROFD_LLM_API_KEY"), "\0"), "***")
        return Check("llm", False, f"{type(e).__name__}: {msg[:300]}",
                     "check [llm] base_url (…/v1), that the server runs, and the key's environment variable")


def check_mail(cfg: Config) -> Check:
    if not cfg.mail:
        return Check("mail", True, "not configured: nightly reports stay on disk (profd report)", skipped=True)
    from profd.report import mail

    try:
        mcfg = mail.MailConfig.from_mapping(cfg.mail)
    except Exception as e:
        return Check("mail", False, str(e), "fix the [mail] section")
    res = mail.probe(mcfg)
    box = mail.outbox_status()
    detail = res.message + (f"; {box.describe()}" if box.pending else "")
    return Check("mail", res.ok, detail, "" if res.ok else "check host, port, security and the password source")


def check_sandbox() -> Check:
    """Which of the candidate child's protections this kernel enforces (Landlock, seccomp)."""
    from profd.harness.sandbox import protections, unenforced

    p = protections()
    missing = unenforced(p)
    detail = "; ".join(f"{k}: {v}" for k, v in p.items())
    if not missing:
        return Check("sandbox", True, detail)
    return Check("sandbox", False, detail,
                 "candidates (an LLM's above all) run with less confinement here: use a kernel with Landlock "
                 "(5.13+) and seccomp, and leave PROFD_SANDBOX unset")


def run_checks(cfg: Config, progress: Callable[[Check], None] = lambda c: None) -> list[Check]:
    """All checks in order; each reported through ``progress`` as it finishes."""
    out: list[Check] = []
    for fn in (check_state_dir, check_gpu):
        out.append(fn())
        progress(out[-1])
    has_gpu = out[-1].ok
    for c in (check_profiler(has_gpu), check_sandbox(), check_llm(cfg), check_mail(cfg)):
        out.append(c)
        progress(c)
    return out


def render(c: Check) -> str:
    mark = "-" if c.skipped else ("✓" if c.ok else "✗")
    line = f"{mark} {c.name:9} {c.detail}"
    if not c.ok and c.fix:
        line += f"\n  {'':9} fix: {c.fix}"
    return line
