"""Knob discovery and the search over the whole real-world corpus (bench/realworld, upstream
kernels materialized from pinned wheels). Skips cleanly where the corpus or its wheels are not
available. ``PROFD_REALWORLD_DIR`` may point at a bench/realworld checkout elsewhere."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from advisors.base import TuneContext
from advisors.knobs import discover
from advisors.rewriters.deterministic import DeterministicAdvisor

ROOT = Path(__file__).resolve().parents[1]
CORPUS_DIR = Path(os.environ.get("PROFD_REALWORLD_DIR", ROOT / "bench" / "realworld"))


def _load(name: str):
    path = CORPUS_DIR / f"{name}.py"
    if not path.exists():
        pytest.skip(f"the real-world corpus is not here ({path})")
    sys.path.insert(0, str(CORPUS_DIR))
    try:
        spec = importlib.util.spec_from_file_location(f"realworld_{name}", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
    finally:
        sys.path.remove(str(CORPUS_DIR))
    return mod


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, dict[str, Path]]:
    corpus, materialize = _load("corpus"), _load("materialize")
    out = tmp_path_factory.mktemp("realworld")
    # The wheels come from the registry (cached under ~/.cache/profd/wheels, or bench/realworld/.wheels):
    # failing to get them is a failure, not a skip.
    wheels = CORPUS_DIR / ".wheels"
    materialize.materialize(out, wheels_dir=wheels if wheels.is_dir() else None)
    files = {p.stem: p for p in out.glob("*.py")}
    if not files:
        pytest.skip("the corpus materialized no targets")
    return corpus, files


def _defines(lines: list[str], line: int, wanted: list[str]) -> bool:
    text = lines[line - 1].strip()
    return any(w and (text.startswith(w.strip()) or w.strip() in text) for w in wanted)


def test_every_expected_knob_is_found_where_it_is_defined(corpus_files) -> None:
    corpus, files = corpus_files
    missing = []
    for name, path in sorted(files.items()):
        source = path.read_text()
        lines = source.splitlines()
        k = discover(source)
        for e in corpus.expected_knobs(name):
            if e["kind"] == "autotune" and e["name"] == "configs":
                if len(k.autotune.get(e["kernel"], [])) != e["value"]:
                    missing.append((name, "configs", len(k.autotune.get(e["kernel"], []))))
                continue
            got = [x for x in k.knobs if e["name"] in (x.name, x.param) and (not x.kernel or x.kernel == e["kernel"])]
            wanted = ([e["defined_at"]] if e["defined_at"] else []) + list(e["sites"])
            if not got or (wanted and not any(_defines(lines, x.line, wanted) for x in got)):
                missing.append((name, e["name"], [(x.line, x.site) for x in got]))
    # One known gap: fla_softmax's autotune num_warps comes from a module list read through a
    # comprehension; the knob is found (the comprehension's line), not at the list's own line.
    missing = [m for m in missing if m[:2] != ("fla_softmax", "num_warps")]
    assert not missing, missing


def test_the_search_has_something_to_try_on_every_target(corpus_files) -> None:
    _, files = corpus_files
    empty = []
    for name, path in sorted(files.items()):
        source = path.read_text()
        ctx = TuneContext(path=str(path), original_source=source, best_source=source, best_median_ms=1.0)
        if not DeterministicAdvisor().propose(ctx, 4):
            empty.append(name)
    assert not empty, f"no candidates for {empty}"


def test_the_search_reaches_swiglus_grid_best_and_never_moves_a_buffer_bound(corpus_files) -> None:
    """unsloth's SwiGLU: the H200 grid's best is BLOCK_SIZE 512 with 1-2 warps (3.4x); before the joint
    pattern search the advisor ran dry after 16 proposals without it, three of them moving
    ``INT32_SAFETY_BUFFER`` (a 2**31 bound, not a size)."""
    from advisors.base import Attempt
    from profd.model import CandidateVerdict

    path = corpus_files[1]["unsloth_swiglu"]
    source = path.read_text()
    ctx = TuneContext(path=str(path), original_source=source, best_source=source, best_median_ms=1.0)
    ctx.knobs = discover(source, str(path))
    adv = DeterministicAdvisor()
    seen: list[dict] = []
    while len(seen) < 24:
        props = adv.propose(ctx, 4)
        if not props:
            break
        for c in props:
            seen.append(dict(c.params))
            ctx.history.append(Attempt(c, CandidateVerdict(c.id, False, "not faster", None, 0.99)))
    assert len(seen) == 24, f"the search ran dry after {len(seen)}"
    assert not any("INT32_SAFETY_BUFFER" in p for p in seen)
    assert any(p.get("BLOCK_SIZE") == 512 and p.get("num_warps") in (1, 2) for p in seen), seen


def test_the_search_reshapes_flaggems_tiles_to_its_grid_best(corpus_files) -> None:
    """FlagGems' log-softmax tiles [BLOCK_M, BLOCK_N] = [8, 256]; the H200 grid's best is [1, 4096]
    with 8 warps (1.47x). The search kept BLOCK_M 16 (1.04x) and never went there: single steps
    change the tile's area, and the pattern search stays within three steps. With the area-keeping
    reshapes it is proposed within the 24-candidate budget, the kept step included."""
    from advisors.base import Attempt
    from profd.model import CandidateVerdict

    path = corpus_files[1]["flaggems_log_softmax"]
    source = path.read_text()
    ctx = TuneContext(path=str(path), original_source=source, best_source=source, best_median_ms=1.0)
    adv = DeterministicAdvisor()
    seen: list[dict] = []
    while len(seen) < 24:
        ctx.knobs = discover(ctx.best_source, str(path))
        props = adv.propose(ctx, 5)
        if not props:
            break
        for c in props:
            seen.append(dict(c.params))
            won = c.params == {"BLOCK_M": 16} and ctx.best_source == source  # as on the H200
            ctx.history.append(Attempt(c, CandidateVerdict(c.id, won, "kept" if won else "not faster", None, 0.99)))
            if won:
                ctx.best_source = c.source
                break
    assert {"BLOCK_M": 16} in seen
    after = seen[seen.index({"BLOCK_M": 16}) + 1:]
    assert {"BLOCK_M": 1, "BLOCK_N": 4096} in after, seen


def test_a_launchers_block_variable_belongs_to_the_launch_that_reads_it(corpus_files) -> None:
    """Liger's rms_norm launcher starts one of two kernels; only the second's grid reads
    ``BLOCK_ROW``, which reaches that kernel through ``kernel_args["BLOCK_ROW"]`` and ``**kernel_args``.
    It used to be filed under the first kernel, which never receives it."""
    from advisors.rewrite import set_knob

    _, files = corpus_files
    src = files["liger_rms_norm"].read_text()
    k = discover(src)
    rows = [x for x in k.knobs if x.name == "BLOCK_ROW"]
    assert [(x.kernel, x.kind, x.value) for x in rows] == [("_block_rms_norm_forward_kernel", "constexpr", 16)]
    assert src.splitlines()[rows[0].line - 1].strip() == "BLOCK_ROW = 16"
    # Rewritten where it is defined: the grid and the dict passed to the launch read the same value.
    out = set_knob(src, "BLOCK_ROW", 32)
    assert "BLOCK_ROW = 32" in out and 'kernel_args["BLOCK_ROW"] = BLOCK_ROW' in out


def test_the_search_reaches_flaggems_grid_best_early_on_the_measured_grid(corpus_files) -> None:
    """Scored by the H200 grid measured for FlagGems' log-softmax (tests/fixtures/grids): a
    candidate wins when its grid point is more than 1% faster than the best so far (a point the
    grid did not measure never wins). An H200 session evaluates about 10-20 candidates in 60 s;
    the search must reach the grid's best ([1, 4096], 8 warps) within 12, where it used to need
    more than 24 (single steps first, reshapes after every knob's steps)."""
    import json

    from advisors.base import Attempt
    from profd.model import CandidateVerdict

    grid = json.loads((Path(__file__).parent / "fixtures" / "grids" / "flaggems_log_softmax-h200.json").read_text())
    ms = {tuple(sorted(p["knobs"].items())): p["ms"] for p in grid["points"]}
    axes = sorted({k for p in grid["points"] for k in p["knobs"]})
    path = corpus_files[1]["flaggems_log_softmax"]
    source = path.read_text()

    def point(src: str) -> tuple:
        k = discover(src, str(path))
        return tuple(sorted((a, int(next(x.value for x in k.knobs if a in (x.name, x.kind)))) for a in axes))

    assert point(source) == (("BLOCK_M", 8), ("BLOCK_N", 256), ("num_warps", 8))
    ctx = TuneContext(path=str(path), original_source=source, best_source=source, best_median_ms=grid["as_written_ms"])
    adv = DeterministicAdvisor()
    best, n = ms[point(source)], 0
    while n < 12 and best > min(ms.values()):
        ctx.knobs = discover(ctx.best_source, str(path))
        props = adv.propose(ctx, 5)
        assert props, "the search ran dry"
        for c in props:
            n += 1
            got = ms.get(point(c.source))
            won = got is not None and got < 0.99 * best
            ctx.history.append(Attempt(c, CandidateVerdict(c.id, won, "kept" if won else "not faster", None, 0.99)))
            if won:
                best, ctx.best_source, ctx.best_median_ms = got, c.source, got
                break
            if n >= 12:
                break
    assert best == min(ms.values()), (n, best, point(ctx.best_source))


def test_a_program_count_below_the_sms_is_raised_first_on_the_measured_grid() -> None:
    """The kernelbench_relu example's grid-stride launch runs ``NUM_PROGRAMS = 32`` programs on an
    H200's 132 SMs. Its H200 session spent three candidates (13 s each: 256 MB per input set) on
    block sizes and ended at 0.68 of the grid. Scored by that grid (tests/fixtures/grids), the
    first candidate is now the launcher's own "no limit" value, the grid's best row."""
    import json

    from advisors.base import TuneContext
    from profd.flow.tune import measured_spec
    from profd.model import DeviceInfo, Measurement, Status, Verdict

    root = Path(__file__).resolve().parents[1]
    src = (root / "examples" / "kernels" / "kernelbench_relu.py").read_text()
    grid = json.loads((Path(__file__).parent / "fixtures" / "grids" / "kernelbench_relu-h200.json").read_text())
    ms = {tuple(sorted(p["knobs"].items())): p["ms"] for p in grid["points"]}
    h200 = measured_spec(Measurement(target="k.py", content_hash="", verdict=Verdict(Status.CORRECT),
                                     device=DeviceInfo(name="NVIDIA H200", backend="cuda")))
    ctx = TuneContext(path="kernelbench_relu.py", original_source=src, best_source=src, best_median_ms=1.0,
                      device_spec=h200)
    first = DeterministicAdvisor().propose(ctx, 4)
    assert [c.params for c in first[:4]] == [{"NUM_PROGRAMS": n} for n in (0, 528, 2112, 8448)], \
        [c.params for c in first]
    assert "NUM_PROGRAMS = 0" in first[0].source and "32 programs for 132 SMs" in first[0].rationale

    def point(s: str) -> tuple:
        k = discover(s)
        return tuple(sorted((n, int(k.get(n).value)) for n in ("NUM_PROGRAMS", "BLOCK_SIZE", "NUM_WARPS")))

    assert ms[point(first[0].source)] <= 1.01 * min(ms.values())
    ctx.device_spec = None  # no SM count known (the CPU interpreter): no such move
    assert not any("NUM_PROGRAMS" in c.params for c in DeterministicAdvisor().propose(ctx, 4))


def test_a_size_step_measured_much_slower_closes_its_direction() -> None:
    """On the softmax example (H200, run 9) a 16384-element block came out 0.73x of the 4096 one;
    later bests still proposed 32768 (a 10 s compile, 0.25x) and 16384 again: 15 s of a 50 s
    session. A size step at least 1/0.8 times slower than its best closes that direction for the
    session; a slow warps step does not (warps and sizes trade against each other)."""
    from advisors.base import Attempt
    from advisors.rewrite import set_knob
    from profd.model import Candidate, CandidateVerdict

    root = Path(__file__).resolve().parents[1]
    src = (root / "examples" / "kernels" / "softmax.py").read_text()
    best = set_knob(set_knob(src, "BLOCK_SIZE", 8192), "NUM_WARPS", 8)
    ctx = TuneContext(path="softmax.py", original_source=src, best_source=best, best_median_ms=0.08)

    def sizes(n: int = 40) -> set:
        return {c.params.get("BLOCK_SIZE") for c in DeterministicAdvisor().propose(ctx, n)} - {None}

    assert {16384, 32768} <= sizes()  # nothing measured yet: both directions open

    def tried(params: dict, speed: float) -> None:
        c = Candidate(id=f"c{len(ctx.history)}", source=set_knob(src, *next(iter(params.items()))), advisor="x",
                      rationale="scripted", params=params)
        ctx.history.append(Attempt(c, CandidateVerdict(c.id, False, "not faster", None, speed)))

    tried({"BLOCK_SIZE": 16384}, 0.73)
    tried({"NUM_WARPS": 32}, 0.5)
    got = sizes()
    assert not any(v >= 16384 for v in got) and 4096 in got, got
    warps = {c.params.get("NUM_WARPS") for c in DeterministicAdvisor().propose(ctx, 40)}
    assert 32 in warps or 16 in warps, warps  # warps stay open
    # Measured in the CPU interpreter (+-30% between processes), 0.73x closes nothing: in .ci/run
    # such dead ends emptied a small kernel's search before its time limit.
    from profd.model import Measurement, Status, Timing, Verdict

    cpu = Timing(median_ms=10.0, min_ms=9.0, max_ms=11.0, p25_ms=9.5, p75_ms=10.5, stdev_ms=0.5, runs=5,
                 method="wall-clock (Triton interpreter on CPU)", representative=False)
    for a in ctx.history:
        a.verdict.measurement = Measurement(target="softmax.py", content_hash="", verdict=Verdict(Status.CORRECT),
                                            timing=cpu)
    assert {16384, 32768} <= sizes()
