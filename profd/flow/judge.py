"""The judge: one acceptance path for every candidate, whatever advisor proposed it.

A candidate never judges itself (DESIGN.md, "The judge"):

1. the contract check (``advisors.contract``): the trusted half unchanged, nothing that
   reaches into profd, other processes or the network;
2. a confined candidate child (``profd.harness.judged``) runs only the candidate's
   ``kernel`` on inputs made by the user's ``get_inputs`` from seeds profd drew, and sends
   back raw outputs of every call and raw timings through a pipe profd opened;
3. the trusted reference process (``profd.harness.reference``), which imports only the
   user's file, compares those outputs after the child has exited (strict dtype and
   shape, the reference dtype's tolerance, chunked);
4. the parent's own clock brackets the timing phase: claimed timings must fit in it,
   and a claimed speed-up must show on it;
5. "falls back to PyTorch": the original launches Triton kernels, the candidate none;
6. a win is re-timed and re-checked against the best in fresh processes on fresh
   inputs; only then is it kept, and marked confirmed (``profd apply`` requires it).

Every text that leaves the judge is passed through :func:`profd.secrets.redact`.
"""

from __future__ import annotations

import json
import math
import os
import secrets as _random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from advisors.base import TuneContext
from advisors.contract import contract_violations, reaching_violations
from profd import secrets
from profd.harness import channel
from profd.harness.candidate_caches import private_cache_env
from profd.harness.runner import kill_group, reap_group, remove_scratch, scrubbed_env
from profd.model import Candidate, CandidateVerdict, DeviceInfo, Measurement, Status, Timing, Verdict
from profd.paths import artifacts_dir, ensure_private_dir, write_private

#: Claimed outputs profd accepts from one candidate child.
OUTPUT_CAP = 256 << 20
#: Verification: trials per declared shape, plus one call on the bench shape.
TRIALS = 3
#: The smallest gain that counts, in percent, whatever the measured spread says.
NOISE_FLOOR_PCT = {True: 1.0, False: 25.0}  # GPU timing vs the CPU interpreter (±30% between processes on 2 cores)
#: GPU timing budget (ms) of the timed phase in every child of a candidate's plan (its screen and
#: both sides of its A/B, :meth:`Judge._plan`): enough for a stable median of a sub-millisecond
#: kernel. FULL_REP_MS is :meth:`Judge.run`'s default for any other caller.
SCREEN_REP_MS = 60.0
FULL_REP_MS = 250.0
# The plan checks each cheap declared shape once, smallest first (a broken rewrite fails there
# first). The screen's timed outputs are not sent; the A/B's are, and its candidate child checks
# every shape on fresh inputs after its timed calls. At GPU sizes the outputs dominate a child's
# cost (a 128 MB output takes about half a second to send, store and compare): three checks per
# shape sent a dozen in softmax's screen and made each promising candidate cost ~25 s.
SCREEN_TRIALS = 1
#: The plan verifies the declared shapes whose inputs are at most this big (the smallest always).
SCREEN_SHAPE_BYTES = 32 << 20
CONFIRM_TRIALS = 1
# Timed calls: a median of at most 50 in every child of the plan (each kept timed call is copied
# for its check, and on an H200 a 40 us kernel's 200 calls cost 0.65 s); FULL_MAX_RUNS is
# Judge.run's default.
SCREEN_MAX_RUNS = 50
FULL_MAX_RUNS = 200
#: Timed calls get distinct input sets, refilled in place from a pool: at most this many sets,
#: within this many bytes (GPU, CPU). A candidate that replays its result for inputs it has
#: seen (a fingerprint of a few elements costs nothing) gains on the median only when most
#: calls repeat an input, so a child makes at most 2P - 1 timed calls over P sets: the median
#: call is always one on inputs new to it (the warm-up runs on a set of its own).
POOL_MAX = 32
POOL_BYTES = {True: 2 << 30, False: 256 << 20}


def pool_size(input_bytes: int, on_gpu: bool) -> int:
    """How many distinct input sets the timed calls cycle through (at least 3: a CPU child's 5 calls)."""
    return max(3, min(POOL_MAX, POOL_BYTES[on_gpu] // max(int(input_bytes), 1)))


#: A first run goes on to the A/B confirmation when it is faster than the best by at least
#: this fraction of the noise floor (the confirmation needs the whole floor).
PROMOTE_FRACTION = 0.5


#: The half-width of a median's ~95% interval is about 1.57 IQR / sqrt(n) (the notch of McGill,
#: Tukey and Larsen's box plots).
NOTCH = 1.57


def median_noise_pct(t: Timing) -> float:
    """How far this median may lie from the kernel's own, in percent of it (its notch)."""
    if not t.median_ms or t.runs < 1:
        return float("inf")
    return 100.0 * NOTCH * max(t.p75_ms - t.p25_ms, 0.0) / math.sqrt(t.runs) / t.median_ms


def noise_pct(a: Timing, b: Timing) -> float:
    """The gain a candidate must beat: the two medians' notches together, with a floor.

    Not the spread of single calls: on an H200 the judge's calls of a 0.2 ms kernel spread by
    50-75% (host time inside the bracket), and a real 2.8x candidate "did not beat the 75.5%
    noise" over 200 calls whose median was known to a few percent. Drift between processes,
    which no notch captures, is what the A/B/A re-runs and the floor are for. The CPU
    interpreter's few wall-clock calls keep the spread rule and their 25% floor."""
    if not (a.representative and b.representative):
        return spread_pct(a, b)
    return max(median_noise_pct(a) + median_noise_pct(b), NOISE_FLOOR_PCT[True])


def spread_pct(a: Timing, b: Timing) -> float:
    """The larger spread of single calls of the two, with the floor: the slack of the clock check."""
    return max(a.spread_pct, b.spread_pct, NOISE_FLOOR_PCT[a.representative and b.representative])


def beats(best: Timing, cand: Timing) -> tuple[bool, float]:
    """Is ``cand`` faster than ``best`` by more than the noise? Returns (win, noise %)."""
    noise = noise_pct(best, cand)
    return cand.median_ms < best.median_ms * (1.0 - noise / 100.0), noise


#: How much profd's clock may be taken to vary between two processes of one kernel (the best's own
#: re-runs measure it) before a claim must show beyond it anyway: with 0.3-0.46 ms per call outside
#: the kernel it varied by 5-10% on an H200, and genuine 1.09x-1.2x wins were refused as forged.
PARENT_NOISE_CAP_PCT = 8.0


@dataclass
class ClockCheck:
    """Whether a claimed speed-up shows on profd's own clock over the two timing phases."""

    ok: bool
    seen: float  # the best's parent time per call / the candidate's
    expect: float  # what that ratio should be if the claimed medians are true
    need: float  # the least ratio accepted
    overhead_ms: float  # per call, outside the kernel, on both sides
    noise_pct: float  # the slack used


def clock_check(best_parent_ms: float, cand_parent_ms: float, bt: Timing, ct: Timing,
                parent_noise_pct: float = 0.0) -> ClockCheck:
    """Do the claimed medians ``bt`` (the best) and ``ct`` (the candidate) fit what profd's clock saw?

    The clock over the timing phase holds per-call work the events don't (input refills, output
    copies; on a GPU the L2 flush, the spin and syncs). That overhead is the best's parent time less
    its median, the same for both sides: true claims predict what the clock sees, and at least half
    of the predicted gain must show, less the slack: the calls' spread (the CPU interpreter's 25%
    floor) or how much the best's own parent time varied between its processes
    (``parent_noise_pct``, capped at :data:`PARENT_NOISE_CAP_PCT`)."""
    seen = best_parent_ms / cand_parent_ms if cand_parent_ms else 0.0
    overhead = max(best_parent_ms - bt.median_ms, 0.0)
    expect = best_parent_ms / max(overhead + ct.median_ms, 1e-9)
    noise = max(spread_pct(bt, ct), min(max(parent_noise_pct, 0.0), PARENT_NOISE_CAP_PCT))
    need = 1.0 + (min(expect, 1e6) - 1.0) * 0.5 - noise / 100.0
    return ClockCheck(not (expect > 1.0 and seen < need), seen, expect, need, overhead, noise)


def promising(best: Timing, first: Timing) -> bool:
    """Could the confirmation accept this candidate? Faster by part of the noise floor."""
    floor = NOISE_FLOOR_PCT[best.representative and first.representative]
    return first.median_ms < best.median_ms * (1.0 - PROMOTE_FRACTION * floor / 100.0)


def source_sha256(source: str) -> str:
    """The digest ``profd apply`` checks a kept candidate's file against."""
    import hashlib

    return hashlib.sha256(source.encode("utf-8", "replace")).hexdigest()


def _target_key(path: Path) -> str:
    from advisors.base import source_digest

    return f"{path.stem}-{source_digest(str(path))[:8]}"


def candidate_file(path: Path, cand_id: str, source: str) -> Path:
    """Write a candidate where the user's watcher never sees it (user-only files)."""
    return write_private(artifacts_dir("candidates", _target_key(path), cand_id) / path.name, source)


@dataclass
class JudgedRun:
    """One candidate child, checked: the Measurement plus what only the judge knows."""

    measurement: Measurement
    launches: int = 0
    parent_ms: Optional[float] = None  # the parent's clock over the timing phase, per timed call
    cause: str = ""  # short cause for tables ("contract", "wrong", "timing forged", ...)
    phases: dict[str, float] = field(default_factory=dict)  # seconds: the child's own laps, spawn, check


@dataclass
class _Claims:
    got: channel.Received
    returncode: Optional[int]
    timed_out: bool
    stderr: str
    wall_s: float


class ReferenceProcess:
    """The parent side of the trusted reference process (one per judge, restarted if it dies)."""

    def __init__(self, original: Path, force_cpu: bool) -> None:
        self.original, self.force_cpu = original, force_cpu
        self.proc: Optional[subprocess.Popen] = None
        self.scratch: Optional[Path] = None
        self.lock = threading.Lock()
        self.ready: Optional[dict[str, Any]] = None
        self.wait_s = 0.0  # how long callers waited for it to answer "ready" (its start-up left over)

    def _usable(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.ready is not None

    def spawn(self) -> None:
        """Start the process now; it imports torch and the user's file, then waits for ``_start``
        before it allocates anything on the GPU (the baseline may be being measured)."""
        if self.proc is not None:
            return
        self.scratch = Path(tempfile.mkdtemp(prefix="profd-ref-"))
        cmd = [sys.executable, "-m", "profd.harness.reference", str(self.original), "wait"] + (
            ["cpu"] if self.force_cpu else [])
        self.proc = subprocess.Popen(cmd, cwd=self.scratch, env=secrets.scrub_env(scrubbed_env()),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, start_new_session=True)

    def _start(self) -> None:
        if self.proc is None or self.proc.poll() is not None or self.ready is not None:
            self.close()
            self.spawn()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it died loading: _read says so
        t0 = time.perf_counter()
        ready = self._read(300.0)
        self.wait_s += time.perf_counter() - t0
        if not ready.get("ready"):
            self.close()
            raise RuntimeError(f"the reference process did not start: {ready.get('message', 'no answer')}")
        self.ready = ready

    def meta(self, timeout_s: float) -> dict[str, Any]:
        """What the original declares: {"shapes": N, "bench_in_shapes": bool} (from the reference process)."""
        with self.lock:
            if not self._usable():
                self._start()
            assert self.ready is not None
            return self.ready

    def _read(self, timeout_s: float) -> dict[str, Any]:
        import select

        assert self.proc and self.proc.stdout
        deadline = time.monotonic() + timeout_s
        while True:
            r, _, _ = select.select([self.proc.stdout], [], [], max(deadline - time.monotonic(), 0.0))
            line = self.proc.stdout.readline() if r else ""
            if not line:
                return {}
            try:
                ans = json.loads(line)
            except json.JSONDecodeError:
                continue  # not an answer (the process keeps its stdout for them; belt and braces)
            if isinstance(ans, dict):
                return ans

    def check(self, calls: list[dict[str, Any]], timeout_s: float) -> dict[str, Any]:
        """The reference's verdict on claimed outputs: {"ok", "status", "message"}."""
        with self.lock:
            if not self._usable():
                self._start()
            assert self.proc and self.proc.stdin
            self.proc.stdin.write(json.dumps({"calls": calls}) + "\n")
            self.proc.stdin.flush()
            ans = self._read(timeout_s)
            if not ans:
                self.close()
                return {"ok": False, "status": Status.TIMEOUT.value,
                        "message": f"comparing with the reference took more than {timeout_s:g} s"}
            return ans

    def close(self) -> None:
        self.ready = None
        if self.proc is not None:
            kill_group(self.proc)
            self.proc.wait()
            self.proc = None
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None


class Judge:
    """Judges candidates of one target file for one tuning session."""

    def __init__(self, path: Path, *, force_cpu: bool = False, timeout_s: float = 120.0,
                 allow_fallback: bool = False, output_cap: int = OUTPUT_CAP, warm: Any = None) -> None:
        # ``warm``: a WarmWorker whose zygote forks the candidate children (torch and Triton already
        # imported: a fork costs milliseconds where a cold child costs seconds). Each fork is still
        # a fresh process that confines itself before loading candidate code.
        # A LockedRunner (profd tune, a daemon slot) wraps the warm worker: its device lock is taken
        # around every child, so two profd processes never measure on one GPU at once.
        self.lock_key: Optional[str] = getattr(warm, "key", None)
        inner = getattr(warm, "inner", warm)
        self.warm = inner if hasattr(inner, "fork_judged") else None
        self.children_last = 0  # children the last evaluate() started (for the tune loop's costs)
        self.phases_last: dict[str, float] = {}  # their phases summed (seconds), same purpose
        # Set by the tuner for CUDA targets: candidate file -> its BuildResult (waits for the
        # confined pre-build); the candidate's child cannot compile in its sandbox.
        self.prebuilt: Optional[Callable[[Path], Any]] = None
        self.build_s_last = 0.0
        self.best_seen: Optional[Timing] = None  # set by evaluate() when it re-timed the best
        self.path = Path(path).resolve()
        self.original = self.path.read_text()
        self.force_cpu, self.timeout_s = force_cpu, timeout_s
        self.allow_fallback, self.output_cap = allow_fallback, output_cap
        self.ref = ReferenceProcess(self.path, force_cpu)
        self.ref.spawn()  # loads while the caller measures the baseline
        self.base: Optional[JudgedRun] = None
        self.spin_ns = 0  # the spin every child's brackets open behind, once the baseline set it (GPU)
        self.parent_runs: dict[str, list[float]] = {}  # profd's clock per call, by the best's source digest
        self.work = ensure_private_dir(artifacts_dir("judge"))
        # Each candidate source's own cache directories (profd.harness.candidate_caches); under
        # profd's state dir, which candidates cannot write, and this session's alone.
        self.caches = Path(tempfile.mkdtemp(prefix="caches-", dir=self.work))
        # Compiling the next candidates ahead, without the GPU (profd/harness/precompile.py): the
        # target and input specs the original's child reported, and the forks' pool.
        self.specs: Optional[dict[str, Any]] = None
        self.pre: Optional[Any] = None

    def close(self) -> None:
        if self.pre is not None:
            self.pre.close()
        self.ref.close()
        shutil.rmtree(self.caches, ignore_errors=True)

    # ------------------------------------------------------------------ compiling ahead

    @property
    def ahead(self) -> int:
        """How many candidates a round should hold so that compiling ahead overlaps the
        measurements: one measured while the precompiler's slots compile the next; 0 where
        nothing is compiled ahead."""
        from profd.harness.precompile import wanted

        if not self._warm_usable() or not self.specs or not hasattr(self.warm, "fork_module"):
            return 0
        if not wanted(not self.force_cpu and bool(self.specs.get("target"))):
            return 0
        return self._slots() + 1

    @staticmethod
    def _slots() -> int:
        return max(1, min(4, (os.cpu_count() or 2) // 4))

    def precompile(self, cands: list[Candidate]) -> None:
        """Queue upcoming candidates to be compiled ahead, in forks that cannot reach the GPU.

        Only with a warm worker (forks cost milliseconds), where a first call compiles (a GPU),
        after the baseline reported its target and inputs, and only for candidates that pass the
        file's contract (the rest are refused before any of their code runs)."""
        from profd.harness.precompile import Precompiler

        if not self.ahead:
            return
        files = []
        for cand in cands:
            try:
                if self.contract_problems(cand.source):
                    continue
            except SyntaxError:
                continue
            files.append(candidate_file(self.path, cand.id, cand.source))
        if self.pre is None:
            self.pre = Precompiler(self.warm, self._precompile_request, self._child_env,
                                   slots=self._slots())
        self.pre.queue(files)

    def contract_problems(self, source: str) -> list[str]:
        """How ``source`` breaks the file's contract (the trusted half, what it may reach); raises
        SyntaxError when it does not parse. A candidate with problems never runs."""
        return contract_violations(self.original, source) + reaching_violations(self.original, source)

    def _precompile_request(self, f: Path) -> Optional[dict[str, Any]]:
        specs = self.specs or {}
        if not specs.get("inputs"):
            return None
        return {"original": str(self.path), "candidate": str(Path(f).resolve()), "sys_path": [str(self.path.parent)],
                "target": specs.get("target") or {"backend": "cuda", "arch": 0, "warp_size": 32},
                "inputs": specs["inputs"]}

    def _child_env(self, f: Path) -> dict[str, str]:
        """A fork's environment for candidate file ``f``: its private caches, no secrets, no GPU."""
        caches = private_cache_env(self.caches, Path(f).read_bytes())
        env = {**(getattr(self.warm, "env_overrides", None) or {}), **caches, "CUDA_VISIBLE_DEVICES": ""}
        return secrets.scrub_env(scrubbed_env(env))

    # ------------------------------------------------------------------ one child

    def run(self, source_path: Path, rep_ms: float = FULL_REP_MS, time_shapes: str = "bench",
            trials: int = TRIALS, max_runs: int = FULL_MAX_RUNS, shapes: Optional[int] = None,
            bench_check: bool = True, max_shape_bytes: Optional[int] = None, timed_outputs: Any = True,
            check_after: bool = False) -> JudgedRun:
        """Run ``source_path``'s kernel in a confined child on fresh inputs and check everything it claims.

        ``trials`` calls per declared shape, on the ``shapes`` smallest (all when None) -- of them,
        with ``max_shape_bytes``, only those whose inputs fit (the smallest always) -- and with
        ``bench_check`` one on the bench shape unless it is declared. The timed calls' outputs
        are checked too, unless ``timed_outputs`` is false (a screen, whose timing only decides
        whether the candidate goes on to the A/B, where they are) or "hold" (kept in the child as
        the candidate's are, not sent: the best's side of the A/B, confirmed when it was kept).
        ``check_after``: after the timed calls, one more check of every declared shape and the
        bench shape (a winner's)."""
        meta = self.ref.meta(self.timeout_s)
        order = meta.get("order") or list(range(int(meta["shapes"])))
        picked = order[:shapes]
        sizes = meta.get("shape_bytes") or []
        if max_shape_bytes is not None and len(sizes) == int(meta["shapes"]):
            picked = [i for k, i in enumerate(picked) if k == 0 or sizes[i] <= max_shape_bytes]
        plan: list[Any] = [i for i in picked for _ in range(max(1, trials))]
        if not meta.get("bench_in_shapes") and bench_check:
            plan.append("bench")
        verify = [{"shape": s, "seed": _random.randbelow(2**31)} for s in plan]
        after: list[Any] = (order + ([] if meta.get("bench_in_shapes") else ["bench"])) if check_after else []
        verify_after = [{"shape": s, "seed": _random.randbelow(2**31)} for s in after for _ in range(CONFIRM_TRIALS)]
        req = {"original": str(self.path), "candidate": str(Path(source_path).resolve()), "verify": verify,
               "verify_after": verify_after, "timed_outputs": timed_outputs,
               # P pool seeds for the timed calls, then one for the warm-up's own inputs.
               "bench_seeds": [_random.randbelow(2**31) for _ in range(self._pool(meta) + 1)],
               "force_cpu": self.force_cpu,
               "sys_path": [str(self.path.parent)], "rep_ms": rep_ms, "time_shapes": time_shapes,
               "max_runs": max_runs,
               # The session baseline (the original's first child) reports what candidates are
               # compiled ahead against (profd.harness.precompile); no other child spends time on it.
               "want_specs": self.specs is None and Path(source_path).resolve() == self.path,
               # One spin for every child after the baseline: sized from each child's own host time,
               # it fell on either side of a 50 us step (H200, 2026-12-03), and that much per call on
               # profd's clock buried real 1.2x wins in the clock check ("timing forged").
               "spin_ns": self.spin_ns}
        self.children_last += 1
        # Two outputs per verification call (NaN and sentinel poison), each at most a few times the
        # inputs' size, plus the timed calls' 64 MiB: more than that is a flood, whatever the kernel.
        per_call = 4 * int(meta.get("max_input_bytes") or 0) + (1 << 20)
        self.cap_now = max(self.output_cap, (2 * (len(verify) + len(verify_after)) + 2) * per_call + (64 << 20))
        t0 = time.perf_counter()
        claims = self._launch(req)
        t1 = time.perf_counter()
        rep = claims.got.report if isinstance(claims.got.report, dict) else {}
        if req["want_specs"] and isinstance(rep.get("precompile_specs"), dict):
            self.specs = rep["precompile_specs"]  # the shapes every screen runs
        r = self._check(req, claims, Path(source_path))
        child = (claims.got.report or {}).get("phases") if isinstance(claims.got.report, dict) else None
        if isinstance(child, dict):
            r.phases = {f"child_{k}": float(v) for k, v in child.items() if isinstance(v, (int, float))}
        r.phases["child_wall"] = round(t1 - t0, 4)
        r.phases["check"] = round(time.perf_counter() - t1, 4)
        for k, v in r.phases.items():
            self.phases_last[k] = round(self.phases_last.get(k, 0.0) + v, 4)
        return r

    def _pool(self, meta: dict[str, Any]) -> int:
        # Sized from the trusted reference process's view of the original's bench inputs.
        return pool_size(int(meta.get("bench_input_bytes") or meta.get("max_input_bytes") or 0),
                         not self.force_cpu and bool(meta.get("on_gpu", True)))

    def _warm_usable(self) -> bool:
        w = self.warm
        if w is None or getattr(w, "disabled", False):
            return False
        # The zygote chose its Triton mode when it started: the interpreter only if it did.
        return not (self.force_cpu and w.alive() and not w.interpret)

    def _launch(self, req: dict[str, Any]) -> _Claims:
        if self.lock_key is None:
            return self._launch_unlocked(req)
        from profd.harness.devicelock import hold

        with hold(self.lock_key, f"judging a candidate of {self.path.name}"):
            return self._launch_unlocked(req)

    def _launch_unlocked(self, req: dict[str, Any]) -> _Claims:
        scratch = Path(tempfile.mkdtemp(prefix="profd-cand-"))
        os.chmod(scratch, 0o700)
        (scratch / "request.json").write_text(json.dumps(req))
        dest = Path(tempfile.mkdtemp(prefix="claims-", dir=self.work))  # under profd's state dir: child can't write
        caches = private_cache_env(self.caches, Path(req["candidate"]).read_bytes())
        if self._warm_usable():
            claims = self._launch_warm(scratch, dest, caches)
            if claims is not None:
                return claims
        rfd, wfd = os.pipe()
        reader = channel.Reader(rfd, dest, getattr(self, 'cap_now', self.output_cap))
        reader.start()
        err = open(scratch / "stderr.log", "w")
        t0 = time.time()
        try:
            proc = subprocess.Popen([sys.executable, "-m", "profd.harness.judged", "request.json", str(wfd)],
                                    cwd=scratch, env=secrets.scrub_env(scrubbed_env(caches)), stdin=subprocess.DEVNULL,
                                    stdout=err, stderr=err, pass_fds=(wfd,), start_new_session=True)
        finally:
            os.close(wfd)
        timed_out = False
        while True:
            try:
                proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if time.time() - t0 > self.timeout_s or reader.got.overflow:
                    timed_out = not reader.got.overflow
                    kill_group(proc)
                    proc.wait()
                    break
        # The group may have left helpers holding the pipe: kill the group (and see it gone: no
        # candidate process outlives its verdict), then stop reading.
        reap_group(proc.pid)
        reader.join(timeout=10)
        err.close()
        stderr = (scratch / "stderr.log").read_text(errors="replace")[-4000:]
        remove_scratch(scratch)
        claims = _Claims(reader.got, proc.returncode, timed_out, stderr, time.time() - t0)
        claims.got.dest = dest  # type: ignore[attr-defined]
        return claims

    def _launch_warm(self, scratch: Path, dest: Path, caches: dict[str, str]) -> Optional[_Claims]:
        """The candidate child as a fork of the warm worker; None when the zygote cannot fork one."""
        fifo = scratch / "channel"
        os.mkfifo(fifo, 0o600)
        reader = channel.FifoReader(fifo, dest, getattr(self, 'cap_now', self.output_cap))
        reader.start()
        t0 = time.time()
        env = {**(getattr(self.warm, "env_overrides", None) or {}), **caches}
        pid = self.warm.fork_judged(scratch, scratch / "request.json", fifo, secrets.scrub_env(scrubbed_env(env)),
                                    done=lambda: False)
        if pid is None:
            reader.release()
            reader.join(timeout=5)
            os.unlink(fifo)
            return None
        exit_file = scratch / "exit.json"
        timed_out = False
        while not exit_file.exists():
            if time.time() - t0 > self.timeout_s or reader.got.overflow:
                timed_out = not reader.got.overflow
                break
            if not self.warm.alive():
                break
            time.sleep(0.005)
        # The fork's whole session goes, helpers included (they may hold the FIFO open).
        reap_group(pid)
        self.warm.current_pid = None
        deadline = time.time() + 10
        while not exit_file.exists() and time.time() < deadline and self.warm.alive():
            time.sleep(0.01)
        reader.release()
        reader.join(timeout=10)
        rc: Optional[int] = None
        try:
            rc = int(json.loads(exit_file.read_text())["returncode"])
        except (OSError, ValueError, KeyError):
            pass
        try:
            stderr = (scratch / "stderr.log").read_text(errors="replace")[-4000:]
        except OSError:
            stderr = ""
        remove_scratch(scratch)
        claims = _Claims(reader.got, rc, timed_out, stderr, time.time() - t0)
        claims.got.dest = dest  # type: ignore[attr-defined]
        return claims

    def _check(self, req: dict[str, Any], c: _Claims, source: Path) -> JudgedRun:
        try:
            return self._check_claims(req, c, source)
        finally:
            shutil.rmtree(getattr(c.got, "dest", ""), ignore_errors=True)

    def _fail(self, source: Path, status: Status, message: str, cause: str, c: Optional[_Claims] = None,
              report: Optional[dict[str, Any]] = None) -> JudgedRun:
        m = Measurement(target=str(source), content_hash="", verdict=Verdict(status, secrets.redact(message)),
                        wall_s=c.wall_s if c else 0.0, stderr_tail=secrets.redact(c.stderr[-2000:]) if c else "")
        if report and isinstance(report.get("device"), dict):
            m.device = DeviceInfo.from_dict(report["device"])
        return JudgedRun(m, cause=cause)

    def _check_claims(self, req: dict[str, Any], c: _Claims, source: Path) -> JudgedRun:
        got, rep = c.got, c.got.report
        if got.overflow:
            return self._fail(source, Status.KERNEL_ERROR, f"output too large: {got.overflow}; profd stopped it",
                              "huge output", c)
        if c.timed_out:
            done = sum(1 for _ in got.outputs)
            return self._fail(source, Status.TIMEOUT, f"did not finish within {self.timeout_s:g} s (after {done} "
                              "checked output(s)); profd killed it and everything it started", "timeout", c)
        if rep is None:
            last = next((ln for ln in reversed(c.stderr.strip().splitlines()) if ln.strip()), "(none)")
            return self._fail(source, Status.CRASH, f"the candidate's process exited (code {c.returncode}) without "
                              f"answering through profd's channel. Last error output: {last}", "crash", c)
        if got.garbage:
            return self._fail(source, Status.KERNEL_ERROR, f"the candidate's process sent {got.garbage} on profd's "
                              "channel: its claims are not trusted", "forged channel", c, rep)
        err = rep.get("error")
        if isinstance(err, dict):
            try:
                status = Status(err.get("status"))
            except ValueError:
                status = Status.KERNEL_ERROR
            if status == Status.CORRECT:
                status = Status.KERNEL_ERROR
            return self._fail(source, status, str(err.get("message", "")), status.value, c, rep)
        calls = rep.get("calls")
        timing_d = rep.get("timing")
        if not isinstance(calls, list) or not isinstance(timing_d, dict):
            return self._fail(source, Status.KERNEL_ERROR, "the candidate's report lacks calls or timings",
                              "forged report", c, rep)
        # Map the outputs that arrived onto the calls profd asked for.
        groups: list[dict[str, Any]] = []
        k = 0
        outs = got.outputs
        verify_calls = [x for x in calls if isinstance(x, dict) and x.get("kind") == "verify"]
        timed = [x for x in calls if isinstance(x, dict) and x.get("kind") == "timed"]
        asked = req["verify"] + req.get("verify_after", [])
        if len(verify_calls) != len(asked) or len(timed) != 1:
            return self._fail(source, Status.KERNEL_ERROR, f"the candidate's process reported {len(verify_calls)} of "
                              f"{len(asked)} verification calls: calls were skipped or invented",
                              "forged report", c, rep)
        # The outputs arrive in the order of the calls: the checks before the timed calls, the
        # timed calls' kept outputs, then the checks after them.
        n_after = 2 * len(req.get("verify_after", []))
        timed_outs = outs[2 * len(req["verify"]):len(outs) - n_after]
        for i, call in enumerate(req["verify"]):
            groups.append({"label": f"check {i + 1}", "shape": call["shape"], "seed": call["seed"],
                           "outputs": [str(p) for p in outs[k:k + 2]]})
            k += 2
        for i, call in enumerate(req.get("verify_after", [])):
            j = len(outs) - n_after + 2 * i
            groups.append({"label": f"check {len(req['verify']) + i + 1} (after the timed calls)",
                           "shape": call["shape"], "seed": call["seed"], "outputs": [str(p) for p in outs[j:j + 2]]})
        kept = timed[0].get("kept") or []
        pool = req["bench_seeds"][:-1]
        runs_claimed = timed[0].get("runs")
        if (timed[0].get("pool") != len(pool) or not isinstance(runs_claimed, int)
                or not 1 <= runs_claimed <= 2 * len(pool) - 1):
            return self._fail(source, Status.KERNEL_ERROR, f"the timed calls did not cycle through profd's {len(pool)} "
                              f"input sets within {2 * len(pool) - 1} calls (reported pool {timed[0].get('pool')!r}, "
                              f"{runs_claimed!r} calls): its claims are not trusted", "forged report", c, rep)
        wanted = req.get("timed_outputs", True) is True
        if (len(outs) < k + n_after or (wanted and not kept) or (not wanted and kept)
                or len(timed_outs) != len(kept)
                or any(not isinstance(i, int) or not 0 <= i < runs_claimed for i in kept)):
            return self._fail(source, Status.KERNEL_ERROR, "the outputs of the timed calls did not come back as asked "
                              f"({len(timed_outs)} blobs for {len(kept)} claimed calls; profd "
                              f"{'checks them too' if wanted else 'asked for none'})", "unchecked timed calls", c, rep)
        for j, i in enumerate(kept):
            groups.append({"label": f"timed call {i + 1}", "shape": "bench",
                           "seed": pool[i % len(pool)], "outputs": [str(timed_outs[j])]})
        ans = self.ref.check(groups, self.timeout_s)
        if not ans.get("ok"):
            try:
                status = Status(ans.get("status"))
            except ValueError:
                status = Status.WRONG
            return self._fail(source, status, str(ans.get("message")), status.value, c, rep)
        try:
            timing = Timing.from_dict(timing_d)
            runs = int(timing.runs)
        except Exception:
            return self._fail(source, Status.KERNEL_ERROR, "the candidate's timings are malformed", "forged report",
                              c, rep)
        if runs < 1 or not (timing.min_ms <= timing.median_ms <= timing.max_ms) or timing.min_ms < 0:
            return self._fail(source, Status.KERNEL_ERROR, f"implausible timings ({timing.min_ms!r} <= "
                              f"{timing.median_ms!r} <= {timing.max_ms!r} ms over {runs} runs)", "timing forged", c, rep)
        clock = [t for t, mk in got.markers if mk.get("clock") in ("start", "end")]
        if len(clock) != 2:
            return self._fail(source, Status.KERNEL_ERROR, "the timing phase was not bracketed on profd's clock "
                              "(markers missing or repeated)", "timing forged", c, rep)
        parent_ms = (clock[1] - clock[0]) * 1e3
        if timing.min_ms * runs > parent_ms * 1.05 + 2.0:
            return self._fail(source, Status.KERNEL_ERROR, f"the claimed timings ({runs} runs of at least "
                              f"{timing.min_ms:.4g} ms) exceed the {parent_ms:.4g} ms profd's clock saw", "timing forged",
                              c, rep)
        m = Measurement(target=str(source), content_hash="", verdict=Verdict(Status.CORRECT, str(ans.get("message"))),
                        timing=timing, wall_s=c.wall_s, stderr_tail=secrets.redact(c.stderr[-2000:]),
                        warnings=[secrets.redact(str(w)) for w in rep.get("warnings", [])][:10])
        if isinstance(rep.get("builds"), dict):
            m.builds = rep["builds"]
        for d in rep.get("shape_timings") or []:
            try:
                st = Timing.from_dict(d)
            except Exception:
                continue
            if st.runs >= 1 and 0 <= st.min_ms <= st.median_ms <= st.max_ms:
                m.shape_timings.append(st)
        if m.shape_timings and not any(s.shape == timing.shape for s in m.shape_timings):
            m.shape_timings.append(timing)
        if isinstance(rep.get("device"), dict):
            m.device = DeviceInfo.from_dict(rep["device"])
        sandbox = rep.get("sandbox")
        if isinstance(sandbox, dict):
            m.warnings.append("sandbox: " + "; ".join(f"{k2}: {secrets.redact(str(v))}" for k2, v in sandbox.items()))
        launches = sum(int(x.get("launches") or 0) for x in verify_calls + timed)
        return JudgedRun(m, launches=launches, parent_ms=parent_ms / max(runs, 1), cause="correct")

    # ------------------------------------------------------------------ decisions

    def baseline(self) -> JudgedRun:
        """The original through the same path candidates take (the figures they must beat)."""
        # profile() has just verified the original (TRIALS per shape and the bench shape): here it
        # is timed on every shape, its outputs checked on the shapes the screen checks (those with
        # inputs up to SCREEN_SHAPE_BYTES, the smallest always) and in its timed calls. At GPU sizes
        # each verified output costs its transfer and a float64 comparison (Unsloth's SwiGLU: two
        # 235 MB outputs per call at its largest shape, 2.4 s of a 7.5 s baseline).
        self.base = self.run(self.path, **{**self._plan(), "time_shapes": "all"})
        self._note_parent(self.original, self.base)
        t = self.base.measurement.timing
        self.spin_ns = int(t.spin_ns) if t is not None and t.spin_ns else 0
        self.best = self.base
        return self.base

    def _note_parent(self, source: str, r: JudgedRun) -> None:
        """Keep profd's clock per call of one more process of ``source`` (the best's runs)."""
        if r.measurement.correct and r.parent_ms:
            self.parent_runs.setdefault(source_sha256(source), []).append(float(r.parent_ms))

    def _parent_noise(self, source: str) -> float:
        """How much profd's clock per call varied between the processes of ``source`` so far, in
        percent of the least (0 with fewer than two)."""
        runs = self.parent_runs.get(source_sha256(source), [])[-8:]
        if len(runs) < 2 or min(runs) <= 0:
            return 0.0
        return 100.0 * (max(runs) - min(runs)) / min(runs)

    @staticmethod
    def _plan(timed_outputs: Any = True, check_after: bool = False) -> dict[str, Any]:
        """The one plan of a candidate's screen and of both sides of its A/B: the declared shapes
        with small inputs checked, smallest first, then the timed calls on the bench shape."""
        return {"rep_ms": SCREEN_REP_MS, "trials": SCREEN_TRIALS, "max_runs": SCREEN_MAX_RUNS, "bench_check": False,
                "max_shape_bytes": SCREEN_SHAPE_BYTES, "timed_outputs": timed_outputs, "check_after": check_after,
                "time_shapes": "all" if check_after else "bench"}

    def evaluate(self, cand: Candidate, best: Timing, ctx: TuneContext) -> tuple[CandidateVerdict, str]:
        """(verdict, short cause). Accepts only a confirmed win; ``verdict.confirmed`` says so."""
        def reject(reason: str, cause: str, m: Optional[Measurement] = None, speed: Optional[float] = None
                   ) -> tuple[CandidateVerdict, str]:
            return CandidateVerdict(cand.id, False, secrets.redact(reason), m, speed), cause

        t_in = time.perf_counter()
        try:
            problems = self.contract_problems(cand.source)
        except SyntaxError as e:
            return reject(f"incorrect: load_error: the candidate does not parse: {e}", "load_error")
        if problems:
            return reject("breaks the file's contract: " + "; ".join(problems), "contract")
        self.children_last = 0
        self.phases_last = {}
        self.build_s_last = 0.0
        self.best_seen = None
        f = candidate_file(self.path, cand.id, cand.source)
        if self.prebuilt is not None:
            t_build = time.time()
            built = self.prebuilt(f)
            self.build_s_last = time.time() - t_build
            if built is not None and not built.ok:
                return reject(f"incorrect: compile_error: {built.error_paragraph}", "compile error")
        # A short first timing: most candidates are losers, and one child with a short timing
        # says so; only a potential winner pays for the A/B below. The screen checks the declared
        # shapes whose inputs are small, smallest first (a broken rewrite fails there, in about a
        # second); its timed calls' outputs are not sent: its timing only decides whether the A/B
        # runs, and there they are checked (sending and comparing two 128 MB softmax outputs took
        # about a second of a loser's two on an H200). A winner's A/B child checks every declared
        # shape and the bench shape before anything is kept. (Liger's softmax, 4096 x 32768 fp32,
        # spent 46 s verifying 5 candidates' screens.)
        if self.pre is not None:
            self.pre.settle(f)
        # The parent's own time before the first child (the contract check, the file, a CUDA build).
        self.phases_last["before_children"] = round(time.perf_counter() - t_in, 4)
        r = self.run(f, **self._plan(timed_outputs=False))
        m = r.measurement
        if not m.correct:
            return reject(f"incorrect: {m.verdict.status.value}: {m.verdict.message}", r.cause, m)
        assert m.timing is not None
        if self.base and self.base.launches > 0 and r.launches == 0 and not self.allow_fallback:
            return reject("falls back to PyTorch: the candidate launched no GPU kernel of its own (the original "
                          f"launched {self.base.launches}); it computes with PyTorch or the reference. Pass "
                          "--allow-fallback (config: allow_fallback = true) to consider such candidates.",
                          "fallback", m)
        speed = best.median_ms / m.timing.median_ms if m.timing.median_ms else None
        noise = noise_pct(best, m.timing)
        if not promising(best, m.timing):
            return reject(f"correct on the checked shapes; {m.timing.median_ms:.4g} ms vs best {best.median_ms:.4g} ms "
                          f"({(speed or 0):.3f}x) is within the {noise:.1f}% noise or slower", "not faster", m, speed)
        # Confirmation, A/B/A with the candidate on both sides: the best in a fresh process, then
        # the candidate again. A process that runs later can be faster (or slower) for reasons of its
        # own (on a 2-core CPU an unchanged kernel came out 1.8x "faster" in the second process),
        # so the candidate must beat the best both before it (the screen) and after it. All three
        # children follow one plan (the same shapes checked before the same timed calls): when the
        # candidate's child checked every shape first, it was timed in a warmer process than the
        # best's, and in Triton's CPU interpreter an unchanged kernel was "confirmed 1.53x in fresh
        # processes". The winner's every-shape check comes after its timed calls, in the same child
        # (it had a child of its own: five children per kept candidate, two to three seconds each).
        best_file = self.path if ctx.best_source == self.original else candidate_file(self.path, "best-recheck",
                                                                                       ctx.best_source)
        b2 = self.run(best_file, **self._plan(timed_outputs="hold"))
        if not (b2.measurement.correct and b2.measurement.timing):
            return reject(f"the confirmation run of the current best failed: {b2.measurement.verdict.message}",
                          "confirmation failed", m, speed)
        bt = b2.measurement.timing
        self._note_parent(ctx.best_source, b2)
        self.best_seen = bt  # the best re-timed in a fresh process (the tuner screens against the faster)
        # The candidate must beat the faster of the best's two figures, the one it was screened
        # against and this re-run: with one sample of the best, one slow process of it let an
        # unchanged kernel through twice in Triton's CPU interpreter (tests/test_tune.py).
        ref = bt if bt.median_ms <= best.median_ms else best
        win1, noise1 = beats(ref, m.timing)
        if not win1:
            return reject(f"looked {(speed or 0):.3f}x faster but the best, re-timed in a fresh process, was as fast "
                          f"({m.timing.median_ms:.4g} vs {ref.median_ms:.4g} ms, noise {noise1:.1f}%)", "not confirmed",
                          m, speed)
        c2 = self.run(f, **self._plan(check_after=True))
        if not (c2.measurement.correct and c2.measurement.timing):
            return reject(f"incorrect on re-check in a fresh process: {c2.measurement.verdict.status.value}: "
                          f"{c2.measurement.verdict.message}", "re-check: " + c2.cause, m, speed)
        ct = c2.measurement.timing
        win2, noise2 = beats(ref, ct)
        claimed = ref.median_ms / ct.median_ms if ct.median_ms else float("inf")
        if not win2:
            return reject(f"looked {(speed or 0):.3f}x faster but the A/B re-check did not confirm it "
                          f"({ct.median_ms:.4g} vs {ref.median_ms:.4g} ms, noise {noise2:.1f}%)", "not confirmed", m, speed)
        if not (ct.representative and bt.representative):
            # Triton's CPU interpreter: timings vary by +-30% between processes on a loaded 2-core
            # machine, in runs of several seconds, and an unchanged kernel was once kept ("confirmed
            # faster") when both of the best's figures fell in a slow run (.ci/run, 2026-12-03). The
            # candidate must also beat the best re-timed after it: A/B/A/B. Never on a GPU.
            b3 = self.run(best_file, **self._plan(timed_outputs="hold"))
            if b3.measurement.correct and b3.measurement.timing:
                self._note_parent(ctx.best_source, b3)
                win3, noise3 = beats(b3.measurement.timing, ct)
                if not win3:
                    return reject(f"looked {(speed or 0):.3f}x faster but the best, re-timed after it, was as fast "
                                  f"({ct.median_ms:.4g} vs {b3.measurement.timing.median_ms:.4g} ms, noise "
                                  f"{noise3:.1f}%)", "not confirmed", m, speed)
        clock = clock_check(b2.parent_ms or 0.0, c2.parent_ms or 0.0, bt, ct, self._parent_noise(ctx.best_source))
        if not clock.ok:
            return reject(f"claims {claimed:.3g}x faster; with the {clock.overhead_ms:.4g} ms per call both sides spend "
                          f"outside the kernel, profd's own clock should see about {clock.expect:.3g}x over the timing "
                          f"phase but saw {clock.seen:.3g}x ({c2.parent_ms:.4g} vs {b2.parent_ms:.4g} ms per call; "
                          f"slack {clock.noise_pct:.1f}%): the timings were forged", "timing forged", m, speed)
        seen = clock.seen
        # Kept only when correct on every declared shape and the bench shape, on fresh inputs (the
        # checks after c2's timed calls); c2 also timed every shape (the report's per-shape table).
        kept = c2.measurement
        kept.timing = ct
        v = CandidateVerdict(cand.id, True, secrets.redact(
            f"correct and {(speed or 0):.3f}x faster than the best so far ({m.timing.median_ms:.4g} vs "
            f"{best.median_ms:.4g} ms; noise {noise:.1f}%; confirmed {claimed:.3f}x in fresh processes on fresh "
            f"inputs, {seen:.3f}x on profd's clock)"), kept, speed)
        v.confirmed = True
        self.best = c2
        return v, "kept"
