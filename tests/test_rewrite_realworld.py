"""Rewrites of real-world-style launchers keep grid and launch consistent: each rewritten kernel
RUNS in the Triton interpreter at a small shape, is checked against its reference, and the values
its launch really received (profd/harness/launches.py) are the ones the rewrite set."""

from __future__ import annotations

import ast
import difflib
from pathlib import Path
from typing import Any

import pytest

from advisors.knobs import discover
from advisors.rewrite import RewriteError, add_autotune_config, apply_settings, set_knob, set_value
from realworld_styles import (DEFAULT_WARPS_ADD, FLAGGEMS_SOFTMAX, LIGER_RMSNORM, TUPLE_MATMUL, TUTORIAL_MATMUL,
                              TUTORIAL_SOFTMAX, line_of, run_in_interpreter)


def knob(source: str, name: str, kind: str = ""):
    k = discover(source)
    found = [x for x in k.knobs if x.name == name and (not kind or x.kind == kind)]
    assert found, f"no knob {name} in {[x.name for x in k.knobs]}"
    return found[0]


def changed_lines(before: str, after: str) -> list[str]:
    return [ln[0] + ln[1:].strip() for ln in difflib.unified_diff(before.splitlines(), after.splitlines(),
                                                                 lineterm="", n=0)
            if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]


def launch_of(result: dict[str, Any], kernel: str, via: str = "launch") -> dict[str, Any]:
    return next(r for r in result["launches"] if r["kernel"] == kernel and r["via"] == via)


@pytest.fixture(scope="module")
def rewritten() -> dict[str, str]:
    """One rewrite per style (and the originals), run together in one interpreter child below."""
    out = {}
    # Liger: the helper's warps chain is overridden after the call, for this launch only.
    out["liger_warps"] = set_value(LIGER_RMSNORM, knob(LIGER_RMSNORM, "num_warps"), 16)
    # Tutorial softmax: computed expressions replaced where they are, warm-up and launch agree.
    s = TUTORIAL_SOFTMAX
    out["softmax_block"] = apply_settings(s, [(knob(s, "BLOCK_SIZE"), 512), (knob(s, "num_stages"), 2),
                                              (knob(s, "num_warps"), 4)])
    # Tutorial matmul: a config in front of get_autotune_config()'s list; the user's stay.
    s = TUTORIAL_MATMUL
    out["matmul_autotune"] = apply_settings(s, [(knob(s, "BLOCK_SIZE_M"), 16), (knob(s, "BLOCK_SIZE_N"), 16),
                                                (knob(s, "num_warps"), 2)])
    # Tuple-assignment launcher: the tuple elements change, so the grid follows.
    s = TUPLE_MATMUL
    out["tuple_tiles"] = apply_settings(s, [(knob(s, "BLOCK_M"), 16), (knob(s, "BLOCK_N"), 64),
                                            (knob(s, "num_stages"), 3)])
    out["tuple_legacy"] = set_knob(TUPLE_MATMUL, "BLOCK_M", 64)
    # FlagGems: the autotune comprehension is extended, the heuristic's return replaced.
    s = FLAGGEMS_SOFTMAX
    out["flaggems"] = apply_settings(s, [(knob(s, "BLOCK_M"), 4), (knob(s, "BLOCK_N"), 128)])
    # Defaults: a caller's argument changes and the absent num_warps is added to the launch.
    s = DEFAULT_WARPS_ADD
    out["add_defaults"] = apply_settings(s, [(knob(s, "block_size"), 1024), (knob(s, "num_warps"), 8)])
    return out


@pytest.fixture(scope="module")
def ran(rewritten: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_in_interpreter(rewritten, tmp_path_factory.mktemp("rw"))


def test_every_rewrite_runs_correctly_in_the_interpreter(ran: dict[str, Any]) -> None:
    bad = {k: v for k, v in ran.items() if not v["ok"]}
    assert not bad, bad


def test_helper_override_is_one_line_after_the_call(rewritten: dict[str, str], ran: dict[str, Any]) -> None:
    new = rewritten["liger_warps"]
    diff = changed_lines(LIGER_RMSNORM, new)
    assert len(diff) == 1 and diff[0].startswith("+num_warps = 16  # profd: instead of calculate_settings()")
    assert line_of(new, "num_warps = 16  # profd") == line_of(new, "BLOCK_SIZE, num_warps = calculate_settings") + 1
    assert "num_warps = 4" in new and "num_warps = 32" in new  # the helper itself is untouched
    assert launch_of(ran["liger_warps"], "_rms_norm_forward_kernel")["num_warps"] == 16
    # Rediscovered, the knob is now the plain local override (the next step edits that line).
    assert knob(new, "num_warps").site == "constant" and knob(new, "num_warps").value == 16


def test_computed_expressions_are_replaced_in_place(rewritten: dict[str, str], ran: dict[str, Any]) -> None:
    diff = changed_lines(TUTORIAL_SOFTMAX, rewritten["softmax_block"])
    assert sorted(d for d in diff if d.startswith("+")) == \
        ["+BLOCK_SIZE = 512", "+num_stages = 2", "+num_warps = 4"]
    rec = launch_of(ran["softmax_block"], "softmax_kernel")
    warm = launch_of(ran["softmax_block"], "softmax_kernel", "warmup")
    assert rec["constexprs"] == warm["constexprs"] == {"BLOCK_SIZE": 512, "num_stages": 2}
    assert rec["num_warps"] == 4 and rec["grid"] == [4, 1, 1]


def test_autotune_configs_are_extended_in_front(rewritten: dict[str, str], ran: dict[str, Any]) -> None:
    new = rewritten["matmul_autotune"]
    assert "configs=[triton.Config({'BLOCK_SIZE_M': 16, 'BLOCK_SIZE_N': 16, 'BLOCK_SIZE_K': 16, " \
           "'GROUP_SIZE_M': 4}, num_warps=2, num_stages=3)] + get_autotune_config()" in new
    k = discover(new)
    assert len(k.autotune["matmul_kernel"]) == 3  # the user's two configs are kept
    rec = launch_of(ran["matmul_autotune"], "matmul_kernel")
    assert rec["autotuned"] and rec["constexprs"]["BLOCK_SIZE_M"] == 16 and rec["num_warps"] == 2
    assert rec["grid"] == [(64 // 16) * (80 // 16)]  # the lambda grid read the new tile
    with pytest.raises(RewriteError, match="already has this config"):
        add_autotune_config(new, "matmul_kernel", {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 16, "num_warps": 2})


def test_tuple_elements_change_with_the_grid(rewritten: dict[str, str], ran: dict[str, Any]) -> None:
    new = rewritten["tuple_tiles"]
    assert "BLOCK_M, BLOCK_N, BLOCK_K = 16, 64, 16" in new
    assert "BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N" in new  # the launch wiring is untouched
    rec = launch_of(ran["tuple_tiles"], "mm_kernel")
    assert rec["constexprs"] == {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 16} and rec["grid"] == [4, 1]
    assert rec["num_stages"] == 3
    # The by-name API used to rewrite the keyword (BLOCK_M=64) and leave the grid on 32.
    legacy = rewritten["tuple_legacy"]
    assert "BLOCK_M, BLOCK_N, BLOCK_K = 64, 32, 16" in legacy and "BLOCK_M=BLOCK_M" in legacy
    assert launch_of(ran["tuple_legacy"], "mm_kernel")["grid"] == [1, 2]


def test_flaggems_comprehension_and_heuristic(rewritten: dict[str, str], ran: dict[str, Any]) -> None:
    new = rewritten["flaggems"]
    assert "configs=[triton.Config({'BLOCK_M': 4}, num_warps=4)] + [triton.Config(" in new
    assert "    return 128\n" in new and "next_power_of_2" not in new.split("def heur_num_warps")[0]
    rec = launch_of(ran["flaggems"], "softmax_kernel_inner")
    assert rec["constexprs"] == {"BLOCK_M": 4, "BLOCK_N": 128} and rec["grid"] == [2, 1, 1]


def test_caller_argument_and_absent_keyword(rewritten: dict[str, str], ran: dict[str, Any]) -> None:
    new = rewritten["add_defaults"]
    assert "return add(x, y, 1024)" in new
    assert "add_kernel[grid](x, y, out, n, BLOCK_SIZE=block_size, num_warps=8)" in new
    assert len(changed_lines(DEFAULT_WARPS_ADD, new)) == 4
    rec = launch_of(ran["add_defaults"], "add_kernel")
    assert rec["constexprs"] == {"BLOCK_SIZE": 1024} and rec["grid"] == [3]


def test_values_from_outside_the_file_are_refused() -> None:
    s = FLAGGEMS_SOFTMAX.replace('values={"BLOCK_N": heur_block_n}', 'values={"BLOCK_N": heur_num_warps}')
    k = knob(s, "BLOCK_N")
    assert k.site == "param"
    with pytest.raises(RewriteError, match="outside this file|nothing here"):
        set_value(s, k, 64)


def test_rewrites_stay_valid_python(rewritten: dict[str, str]) -> None:
    for text in rewritten.values():
        ast.parse(text)


# ---------------------------------------------------------------------- the search on these styles

from advisors.base import TuneContext, source_digest  # noqa: E402
from advisors.rewriters.deterministic import DeterministicAdvisor  # noqa: E402
from hwspecs import db as specs  # noqa: E402
from realworld_styles import ALL  # noqa: E402


def proposals(source: str, n: int = 6, spec=None, **ctx_kw) -> list:
    ctx = TuneContext(path="k.py", original_source=source, best_source=source, best_median_ms=1.0,
                      device_spec=spec, **ctx_kw)
    return DeterministicAdvisor().propose(ctx, n)


def test_hopper_matmul_presets_change_the_tuple_first() -> None:
    cands = proposals(TUPLE_MATMUL, 4, spec=specs.get("h200-sxm"))
    first = cands[0]
    assert first.params.pop("preset") and first.params == {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3}
    assert "BLOCK_M, BLOCK_N, BLOCK_K = 128, 256, 64" in first.source
    assert "Hopper" in first.rationale and "at line" in first.rationale
    mi = proposals(TUPLE_MATMUL, 1, spec=specs.get("mi300x"))[0]
    assert (mi.params["BLOCK_M"], mi.params["BLOCK_N"]) == (256, 256) and "MI300" in mi.rationale
    assert "num_stages" not in mi.params  # already 2, what AMD pipelines with: unchanged, not in the diff


def test_rowwise_presets_tune_warps_not_the_row_block() -> None:
    cands = proposals(LIGER_RMSNORM, 3)
    assert cands and all(set(c.params) <= {"num_warps", "num_stages", "preset"} for c in cands)
    assert all("overrides calculate_settings()'s result" in c.rationale for c in cands if "num_warps" in c.params)
    # With the run-time record (a 4096-wide row ran with 8 warps): warps by row size, not 8 again.
    from advisors.knobs import discover as disc
    from profd.model import LaunchRecord

    rec = LaunchRecord(kernel="_rms_norm_forward_kernel", constexprs={"BLOCK_SIZE": 4096}, num_warps=8)
    ran_knobs = disc(LIGER_RMSNORM).with_runtime([rec])
    cands = proposals(LIGER_RMSNORM, 2, knobs=ran_knobs)
    assert [c.params.get("num_warps") for c in cands] == [16, 4]
    assert "row of 4096 elements" in cands[0].rationale


def test_candidates_are_unique_and_rationales_name_their_diff() -> None:
    for name, source in ALL.items():
        cands = proposals(source, 12)
        assert cands, name
        assert len({source_digest(c.source) for c in cands}) == len(cands), name
        for c in cands:
            ast.parse(c.source)
            added = [ln[1:] for ln in c.diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
            for knob_name, value in c.params.items():
                if knob_name in ("preset", "program_order"):
                    continue
                assert knob_name in c.rationale and repr(value) in c.rationale, (name, c.rationale)
                assert any(repr(value) in ln for ln in added), (name, knob_name, c.diff)


def test_the_cache_skips_what_failed_before(tmp_path: Path) -> None:
    from profd.store import Store

    with Store(tmp_path / "s.db") as store:
        first = proposals(TUPLE_MATMUL, 2)
        cache = store.tune_cache("cpu", "64x32x64")
        cache.put(source_digest(first[0].source), None, "wrong")
        cache.put(source_digest(first[1].source), 0.5, "accepted")
        again = proposals(TUPLE_MATMUL, 2, cache=cache)
        assert source_digest(first[0].source) not in {source_digest(c.source) for c in again}
        assert source_digest(again[0].source) == source_digest(first[1].source)  # a known winner first
        assert store.tune_cache_get(source_digest(first[0].source), "cpu", "64x32x64") == (None, "wrong")
        assert store.tune_cache_get(source_digest(first[0].source), "h200", "64x32x64") is None


def test_search_candidates_run_correctly_in_the_interpreter(tmp_path: Path) -> None:
    # Every launch the search proposes keeps its grid consistent: run a few per style for real.
    batch = {}
    for name in ("tuple_matmul", "liger_rmsnorm", "tutorial_softmax", "default_warps_add", "flaggems_softmax",
                 "tutorial_matmul"):
        small = ALL[name]
        for i, c in enumerate(proposals(small, 3)):
            batch[f"{name}_{i}"] = c.source
    ran = run_in_interpreter(batch, tmp_path)
    bad = {k: v.get("error") or v.get("max_err") for k, v in ran.items() if not v["ok"]}
    assert not bad, bad
