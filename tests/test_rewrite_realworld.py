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
