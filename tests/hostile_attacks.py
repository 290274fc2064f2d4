"""Hostile candidates for the judge (issue #14): a target, one genuine rewrite, and the attacks.

Each attack is the target's source with ``kernel`` (and sometimes module-level code)
replaced. Most hide from the static contract check on purpose (``_rt`` reaches modules
at run time through the interpreter's BuiltinImporter and ``sys.modules``), so that the
run-time defences are what rejects them; a few are the plain, static forms.
"""

from __future__ import annotations

TARGET = '''
import torch
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BLOCK = 64


@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask)


def kernel(x, y):
    out = torch.empty_like(x)
    add_kernel[(triton.cdiv(x.numel(), BLOCK),)](x, y, out, x.numel(), BLOCK=BLOCK)
    return out


def reference(x, y):
    return x + y


SHAPES = [dict(n=300)]
BENCH_SHAPE = dict(n=4096)


def get_inputs(n=300):
    return [torch.randn(n, device=DEVICE), torch.randn(n, device=DEVICE)]
'''

GENUINE = TARGET.replace("BLOCK = 64", "BLOCK = 1024")

_KERNEL = '''def kernel(x, y):
    out = torch.empty_like(x)
    add_kernel[(triton.cdiv(x.numel(), BLOCK),)](x, y, out, x.numel(), BLOCK=BLOCK)
    return out
'''

# Run-time access to any module without an import statement the static check would see.
_RT = '''
def _rt(name):
    imp = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == "BuiltinImporter"][0]
    s = imp.load_module("sys")
    return s if name == "sys" else s.modules["importlib"].import_module(name)
'''


def _k(body: str, top: str = "") -> str:
    """The target with kernel's body replaced (``{launch}`` expands to the real launch)."""
    launch = ("out = torch.empty_like(x); add_kernel[(triton.cdiv(x.numel(), BLOCK),)](x, y, out, x.numel(), "
              "BLOCK=BLOCK)")
    new = "def kernel(x, y):\n    " + body.strip().replace("{launch}", launch).replace("\n", "\n    ") + "\n"
    return TARGET.replace(_KERNEL, _RT + top + "\n" + new)


#: (name, what it tries, source)
ATTACKS: list[tuple[str, str, str]] = [
    ("forge result file", "writes its own result.json (verdict correct, 1e15x) and exits",
     _k('import json\nopen("result.json", "w").write(json.dumps({"verdict": {"status": "correct"}, '
        '"timing": {"median_ms": 1e-12}}))\n_rt("os")._exit(0)')),
    ("forge channel report", "writes a forged report frame on profd's pipe and exits",
     _k('import json, struct\ns = _rt("sys")\nfd = int(s.argv[-1])\np = json.dumps({"calls": [], "timing": '
        '{"median_ms": 1e-12, "min_ms": 1e-12, "max_ms": 1e-12, "p25_ms": 1e-12, "p75_ms": 1e-12, "stdev_ms": 0, '
        '"runs": 5, "method": "x", "representative": True}}).encode()\n'
        '_rt("os").write(fd, struct.pack(">cQ", b"R", len(p)) + p)\n_rt("os")._exit(0)')),
    ("patch profd.verify", "replaces the comparison inside its own process, returns zeros",
     _k('m = _rt("sys").modules\nfor k in list(m):\n    if k.startswith("profd.harness.verify"):\n'
        '        m[k].compare_strict = m[k].compare = lambda *a, **k: None\nreturn torch.zeros_like(x)')),
    ("patch profd.timing", "replaces time_cpu/time_gpu with a fake 1e-9 ms timing",
     _k('m = _rt("sys").modules\nT = m["profd.harness.timing"]\nfrom profd.model import Timing\n'
        'fake = lambda fn, **k: Timing(1e-9, 1e-9, 1e-9, 1e-9, 1e-9, 0.0, 5, "x", False)\n'
        'T.time_cpu = T.time_gpu = fake\n{launch}\nreturn out').replace("from profd.model", "Timing = m['profd.model'].Timing #")),
    ("patch time.perf_counter", "freezes the timer: every call takes 0 ms (an infinite speed-up)",
     _k('t = _rt("time")\nif not hasattr(t, "_real"):\n    t._real = t.perf_counter\n    t.perf_counter = lambda: 1.0\n'
        '{launch}\nreturn out')),
    ("forged 1e15x via timer", "a timer that runs 1e15 times slower than the clock",
     _k('t = _rt("time")\nif not hasattr(t, "_real"):\n    r = t.perf_counter\n    t._real = r\n'
        '    t.perf_counter = lambda: r() * 1e-15\n{launch}\nreturn out')),
    ("rebind BENCH_SHAPE (static)", "sys.modules[__name__].BENCH_SHAPE = tiny",
     TARGET.replace("def kernel(x, y):", "import sys\nsys.modules[__name__].BENCH_SHAPE = dict(n=8)\n\n\ndef kernel(x, y):")),
    ("rebind BENCH_SHAPE (run time)", "shrinks the timed problem through sys.modules at run time",
     _k('s = _rt("sys")\nfor name, mod in list(s.modules.items()):\n    if hasattr(mod, "BENCH_SHAPE"):\n'
        '        mod.BENCH_SHAPE = dict(n=8)\n        mod.SHAPES = [dict(n=8)]\n{launch}\nreturn out')),
    ("rebind reference (run time)", "makes every loaded module's reference return zeros, returns zeros",
     _k('s = _rt("sys")\nfor name, mod in list(s.modules.items()):\n    if hasattr(mod, "reference") and name != "builtins":\n'
        '        try:\n            mod.reference = lambda *a: torch.zeros_like(a[0])\n        except Exception:\n'
        '            pass\nreturn torch.zeros_like(x)')),
    ("change reference (static)", "edits the reference body",
     TARGET.replace("    return x + y\n", "    return torch.zeros_like(x)\n").replace(
         "    return out\n", "    return torch.zeros_like(x)\n")),
    ("shrink SHAPES (static)", "edits BENCH_SHAPE", TARGET.replace("BENCH_SHAPE = dict(n=4096)", "BENCH_SHAPE = dict(n=8)")),
    ("fp16 output", "returns float16 for a float32 reference (looser tolerance)", _k('{launch}\nreturn out.half()')),
    ("wrong shape", "returns one element fewer", _k('{launch}\nreturn out[:-1]')),
    ("call reference", "returns reference(x, y)", _k('return reference(x, y)')),
    ("plain torch op", "returns x + y (no kernel)", _k('return torch.add(x, y)')),
    ("read phase file", "behaves honestly only while a phase file says it is being verified",
     _k('import os\nif os.path.exists("result.phase") and "timing" in open("result.phase").read():\n'
        '    return torch.zeros_like(x)\nif not os.path.exists("result.phase"):\n    return torch.zeros_like(x)\n'
        '{launch}\nreturn out')),
    ("detect timing via frames", "walks sys._getframe for time_cpu/time_gpu; cheap zeros when timed",
     _k('f = _rt("sys")._getframe(1)\nwhile f is not None:\n    if f.f_code.co_name in ("time_cpu", "time_gpu"):\n'
        '        return torch.zeros_like(x)\n    f = f.f_back\n{launch}\nreturn out')),
    ("reference outputs from stack", "looks for the reference's result in callers' locals",
     _k('f = _rt("sys")._getframe(1)\nwhile f is not None:\n    for k, v in f.f_locals.items():\n'
        '        if k in ("ref", "expected", "reference_out") and isinstance(v, list):\n            return v[0]\n'
        '    f = f.f_back\nreturn torch.zeros_like(x)')),
    ("gc walk for reference", "scans gc objects for a tensor equal to x + y computed elsewhere",
     _k('g = _rt("gc")\nfor o in g.get_objects():\n    if isinstance(o, torch.Tensor) and o.shape == x.shape and o is not x '
        'and o is not y and o.dtype == torch.float64:\n        return o.float()\nreturn torch.zeros_like(x)')),
    ("cache by input identity", "computes once per input object, then returns the cached result",
     _k('c = globals().setdefault("_CACHE", {})\nkey = (id(x), id(y))\nif key not in c:\n    {launch}\n'
        '    c[key] = out\nreturn c[key]').replace("globals()", '_rt("sys").modules[__name__].__dict__')),
    ("cache by data_ptr", "caches on the storage address (refilled in place between timed calls)",
     _k('c = _rt("sys").modules[__name__].__dict__.setdefault("_C", {})\nkey = (x.data_ptr(), y.data_ptr())\n'
        'if key not in c:\n    {launch}\n    c[key] = out\nreturn c[key]')),
    ("cache by content", "fingerprints the inputs (a few elements) and replays its result for inputs seen before",
     _k('c = _rt("sys").modules[__name__].__dict__.setdefault("_F", {})\n'
        'key = (x.shape, tuple(x.flatten()[:4].tolist()), tuple(y.flatten()[:4].tolist()))\n'
        'if key not in c:\n    {launch}\n    c[key] = out\nreturn c[key].clone()')),
    ("read parent's environ", "reads /proc/<ppid>/environ and puts it in its error",
     _k('os = _rt("os")\nraise RuntimeError(open(f"/proc/{os.getppid()}/environ", "rb").read().decode(errors="replace"))')),
    ("dump own environment", "puts its environment in its error message",
     _k('raise RuntimeError(repr(dict(_rt("os").environ)))')),
    ("network exfiltration", "opens a TCP connection to 127.0.0.1",
     _k('so = _rt("socket")\ns = so.socket(so.AF_INET, so.SOCK_STREAM)\ns.settimeout(2)\n'
        's.connect(("127.0.0.1", 9))\nreturn x + y')),
    ("kill the parent", "SIGKILLs os.getppid()",
     _k('os = _rt("os")\nos.kill(os.getppid(), 9)\n{launch}\nreturn out')),
    ("kill everything", "kill(-1, SIGKILL)", _k('_rt("os").kill(-1, 9)\n{launch}\nreturn out')),
    ("chmod/utime the user's file", "changes the mode and mtime of every .py in the user's directory",
     _k('os = _rt("os")\nd = [p for p in _rt("sys").path if os.path.isdir(p) and "candidates" not in p][0]\n'
        'for f in os.listdir(d):\n    if f.endswith(".py"):\n        os.chmod(os.path.join(d, f), 0o777)\n'
        '        os.utime(os.path.join(d, f), (0, 0))\n{launch}\nreturn out')),
    ("write the user's file", "appends to the user's kernel file",
     _k('os = _rt("os")\nd = _rt("sys").path[0]\nfor f in os.listdir(d):\n    if f.endswith(".py"):\n'
        '        open(os.path.join(d, f), "a").write("# owned\\n")\n{launch}\nreturn out')),
    ("ctypes ptrace/kill", "calls libc kill/ptrace on the parent through ctypes",
     _k('ct = _rt("ctypes")\nlibc = ct.CDLL(None, use_errno=True)\nos = _rt("os")\n'
        'a = libc.kill(os.getppid(), 9)\nb = libc.ptrace(16, os.getppid(), 0, 0)\n'
        'raise RuntimeError(f"ctypes could not reach the parent (kill {a}, ptrace {b}, errno {ct.get_errno()})")')),
    ("escape the process group", "setsid() then leave a sleeper behind",
     _k('os = _rt("os")\nif os.fork() == 0:\n    os.setsid()\n    _rt("time").sleep(600)\n    os._exit(0)\n'
        'os.setsid()\n{launch}\nreturn out')),
    ("fork bomb", "forks sleeping children until it cannot, then fails",
     _k('os = _rt("os")\nfor _ in range(40):\n    if os.fork() == 0:\n        _rt("time").sleep(600)\n'
        '        os._exit(0)\nraise RuntimeError("forked 40 sleepers")')),
    ("huge output", "returns a 320 MB tensor", _k('return torch.zeros(80_000_000)')),
    ("hang", "never returns", _k('while True:\n    pass')),
    ("pickle payload", "returns an object whose unpickling runs code",
     _k('class Evil:\n    def __reduce__(self):\n        return (print, ("pwned",))\nreturn [Evil()]')),
    ("mutate input", "writes the sum into x and returns it", _k('x.add_(y)\nreturn x')),
    ("late writes from a thread", "returns an empty tensor that a thread fills in later",
     _k('out = torch.empty_like(x)\nth = _rt("threading")\n'
        'th.Thread(target=lambda: (_rt("time").sleep(0.05), out.copy_(x + y))).start()\nreturn out')),
    ("import profd (static)", "imports profd.harness.verify to patch it",
     _k('import profd.harness.verify as V\nV.compare_strict = lambda *a, **k: None\n{launch}\nreturn out')),
]

# Hide the run-time attacks from the static check (a local named O, not os): the sandbox must stop them.
ATTACKS = [(n, w, s.replace('os = _rt("os")', 'O = _rt("os")').replace("os.", "O.").replace("_rt(\"O\")", "_rt(\"os\")")
            if 'os = _rt("os")' in s else s) for n, w, s in ATTACKS]
