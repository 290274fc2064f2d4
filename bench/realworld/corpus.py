"""The real-world corpus manifest: which upstream Triton code, from which wheel, wrapped how.

Each ``Target`` names a released wheel (pinned by version, file name and sha256), the module
files inside it and the top-level definitions to take from each (``materialize.py`` cuts them
out verbatim), the wrapper we wrote (``wrappers/<name>.py``), at most one planted defect, the
launch knobs a knob-discovery pass should find (``expect``), and the exhaustive grid the anchor
script ``grid.py`` sweeps (``grid``).

Substitutions (defects and grid sites) are exact text: ``old`` must occur exactly ``count``
times in the materialized file, else materializing fails loudly. With ``until`` set, the span
from ``old`` through the first ``until`` after it is replaced (for a multi-line config list).
Grid ``new`` texts are ``string.Template`` strings (``${num_warps}``): ``$`` never occurs in the
upstream code, whereas ``{}`` does (dict literals in ``triton.Config``).

Nothing in this file is upstream code beyond the one-line anchors the substitutions need.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Wheel:
    """A released wheel on PyPI, pinned."""

    dist: str  # distribution name for pip
    version: str
    filename: str
    sha256: str
    repo: str  # upstream repository URL
    licence: str  # SPDX id
    licence_file: str  # path of the licence text inside the wheel


@dataclass(frozen=True)
class Piece:
    """Top-level definitions (bound names) to take, verbatim, from one module file of the wheel."""

    path: str  # inside the wheel
    names: tuple[str, ...]


@dataclass(frozen=True)
class Sub:
    """An exact textual substitution (see the module docstring)."""

    old: str
    new: str
    count: int = 1
    until: str | None = None


@dataclass(frozen=True)
class Defect(Sub):
    """The one planted defect of a target: what it does and which knob fixes it."""

    why: str = ""
    fix: str = ""


@dataclass(frozen=True)
class Knob:
    """A launch knob a discovery pass should find in the materialized file.

    ``name``: the launch keyword / constexpr / config field; ``kernel``: the jit function it
    configures; ``defined_at``: the (stripped) text of the line that defines the value in effect
    at the GPU ``BENCH_SHAPE`` (``None``: not set anywhere, Triton's default applies);
    ``within``: the function holding that line (``"<module>"`` for module level); ``value``: the
    value it gives there; ``sites``: every line that can define it (an if/elif chain);
    ``kind``: ``"launch"`` (a launch keyword or constexpr argument), ``"constexpr-default"``
    (a default in the kernel signature) or ``"autotune"`` (a ``triton.autotune`` config list).
    """

    name: str
    kernel: str
    defined_at: str | None
    within: str
    value: object
    sites: tuple[str, ...] = ()
    kind: str = "launch"


@dataclass(frozen=True)
class Grid:
    """An exhaustive knob grid: the product of ``axes``, each variant made by ``subs``."""

    axes: dict[str, list[int]]
    subs: tuple[Sub, ...]


@dataclass(frozen=True)
class Target:
    name: str
    dist: str  # key of WHEELS
    project: str
    kind: str  # kernel class
    upstream_path: str  # path in the upstream repository
    pieces: tuple[Piece, ...]  # helpers first, the main module last
    expect: tuple[Knob, ...]
    grid: Grid
    defect: Defect | None = None
    notes: str = ""
    launches: tuple[str, ...] = field(default=())  # jit kernels launched at BENCH_SHAPE


WHEELS: dict[str, Wheel] = {
    "liger-kernel": Wheel(
        "liger-kernel", "0.8.5", "liger_kernel-0.8.5-py3-none-any.whl",
        "60789cd576af073ab9b192b570d2597fd0cdad489cd62fb44fb16256d43754c9",
        "https://github.com/linkedin/Liger-Kernel", "BSD-2-Clause",
        "liger_kernel-0.8.5.dist-info/licenses/LICENSE",
    ),
    "unsloth": Wheel(
        "unsloth", "2026.10.9", "unsloth-2026.10.9-py3-none-any.whl",
        "feb40b99bc4f8c543a36cbd0fe6e1410d6e4ac16bd4d0c731f607adce3d63bb0",
        # Only Apache-2.0 files are used (the kernels' own headers say so); unsloth also ships
        # LGPL (rope_embedding.py) and AGPL (kernels/moe, studio) code, which we stay clear of.
        "https://github.com/unslothai/unsloth", "Apache-2.0",
        "unsloth-2026.10.9.dist-info/licenses/LICENSE",
    ),
    "flag-gems": Wheel(
        "flag-gems", "5.0.2", "flag_gems-5.0.2-py3-none-any.whl",
        "d7c5a6121bf2d3f7daddde43bfa7cae739de6cb5b294dcfe7ae6173045c35552",
        "https://github.com/FlagOpen/FlagGems", "Apache-2.0",
        "flag_gems-5.0.2.dist-info/LICENSE",
    ),
    "fla-core": Wheel(
        "fla-core", "0.6.0", "fla_core-0.6.0-py3-none-any.whl",
        "b0708b70e0b119cd58a0a5146ea56cb175cef6ed969d8ac60267e3e077ce3ebd",
        "https://github.com/fla-org/flash-linear-attention", "MIT",
        "fla_core-0.6.0.dist-info/licenses/LICENSE",
    ),
}

# Grid pieces shared by the calculate_settings-style targets: the num_warps the helper returns.
_WARPS = [1, 2, 4, 8, 16, 32]
_RETURN_SETTINGS = "    return BLOCK_SIZE, num_warps\n"


def _warps_grid(count: int = 1) -> Grid:
    """num_warps over _WARPS, at calculate_settings' return line (``count``: how often it occurs)."""
    return Grid({"num_warps": _WARPS}, (
        Sub(_RETURN_SETTINGS, "    return BLOCK_SIZE, ${num_warps}\n", count=count),
    ))


_LIGER_SETTINGS_SITES = ("num_warps = 4", "num_warps = 32 if not is_hip() else 16",
                         "num_warps = 16", "num_warps = 8")
_UNSLOTH_SETTINGS_SITES = ("num_warps: int = 4", "num_warps = 32", "num_warps = 16", "num_warps = 8")
_LIGER_UTILS = "liger_kernel/ops/utils.py"


def _unsloth_flat_grid(block_line: str) -> Grid:
    """BLOCK_SIZE x num_warps for unsloth's flat 1-D kernels: ``block_line`` sets BLOCK_SIZE, and
    num_warps (not passed upstream) is added beside ``enable_fp_fusion``."""
    return Grid(
        {"BLOCK_SIZE": [128, 256, 512, 1024, 2048, 4096, 8192], "num_warps": [1, 2, 4, 8, 16]},
        (
            Sub(block_line, "\nBLOCK_SIZE = ${BLOCK_SIZE}\n"),
            Sub("            enable_fp_fusion = True,\n",
                "            enable_fp_fusion = True,\n            num_warps = ${num_warps},\n"),
        ),
    )


def _liger_block(kernel: str) -> Knob:
    return Knob("BLOCK_SIZE", kernel, "BLOCK_SIZE = triton.next_power_of_2(n)", "calculate_settings",
                None)  # the next power of two of the row width: a bound, not a free knob


TARGETS: tuple[Target, ...] = (
    # ------------------------------------------------------------------ Liger-Kernel (BSD-2)
    Target(
        name="liger_rms_norm", dist="liger-kernel", project="Liger-Kernel",
        kind="row-wise norm (RMSNorm, Llama casting)",
        upstream_path="src/liger_kernel/ops/rms_norm.py",
        pieces=(
            Piece(_LIGER_UTILS, ("is_hip", "device_context", "calculate_settings")),
            Piece("liger_kernel/ops/rms_norm.py", (
                "_CASTING_MODE_NONE", "_CASTING_MODE_LLAMA", "_CASTING_MODE_GEMMA",
                "_rms_norm_forward_kernel", "_block_rms_norm_forward_kernel",
                "_str_to_casting_mode", "rms_norm_forward")),
        ),
        launches=("_rms_norm_forward_kernel",),
        expect=(
            _liger_block("_rms_norm_forward_kernel"),
            Knob("num_warps", "_rms_norm_forward_kernel", "num_warps = 8", "calculate_settings", 8,
                 _LIGER_SETTINGS_SITES),
        ),
        grid=_warps_grid(),
    ),
    Target(
        name="liger_layer_norm", dist="liger-kernel", project="Liger-Kernel",
        kind="row-wise norm (LayerNorm with weight and bias)",
        upstream_path="src/liger_kernel/ops/layer_norm.py",
        pieces=(
            Piece(_LIGER_UTILS, ("is_hip", "calculate_settings")),
            Piece("liger_kernel/ops/layer_norm.py", ("_layer_norm_forward_kernel", "layer_norm_forward")),
        ),
        launches=("_layer_norm_forward_kernel",),
        defect=Defect(
            "    elif BLOCK_SIZE >= 8192:\n        num_warps = 16\n",
            "    elif BLOCK_SIZE >= 8192:\n        num_warps = 2\n",
            why="calculate_settings gives 8192..16383-wide rows 2 warps instead of 16: each of 64\n"
                "threads holds 128 fp32 row elements plus the centred copy, far past the register\n"
                "file, so the row spills to local memory and few rows are in flight per SM.",
            fix="num_warps back to 16 in calculate_settings' `BLOCK_SIZE >= 8192` branch (8-16 are best).",
        ),
        expect=(
            _liger_block("_layer_norm_forward_kernel"),
            Knob("num_warps", "_layer_norm_forward_kernel", "num_warps = 2", "calculate_settings", 2,
                 ("num_warps = 4", "num_warps = 32 if not is_hip() else 16", "num_warps = 2",
                  "num_warps = 8")),
        ),
        grid=_warps_grid(),
    ),
    Target(
        name="liger_swiglu", dist="liger-kernel", project="Liger-Kernel",
        kind="elementwise gated activation (SwiGLU, one row per program)",
        upstream_path="src/liger_kernel/ops/swiglu.py",
        pieces=(
            Piece(_LIGER_UTILS, ("is_hip", "device_context", "calculate_settings")),
            Piece("liger_kernel/ops/swiglu.py", (
                "_SWIGLU_TILE", "_SWIGLU_TILE_MIN_BLOCK", "_should_tile", "_swiglu_tile_settings",
                "silu", "_swiglu_forward_kernel", "_swiglu_forward_kernel_tiled", "swiglu_forward")),
        ),
        launches=("_swiglu_forward_kernel",),
        notes="On Blackwell swiglu_forward takes the column-tiled path (_swiglu_tile_settings).",
        expect=(
            _liger_block("_swiglu_forward_kernel"),
            Knob("num_warps", "_swiglu_forward_kernel", "num_warps = 16", "calculate_settings", 16,
                 _LIGER_SETTINGS_SITES),
        ),
        # _swiglu_tile_settings ends in the same return line (a no-op on Hopper): count=2.
        grid=_warps_grid(count=2),
    ),
    Target(
        name="liger_softmax", dist="liger-kernel", project="Liger-Kernel",
        kind="softmax (the row in one block; calculate_settings launch)",
        upstream_path="src/liger_kernel/ops/softmax.py",
        pieces=(
            Piece(_LIGER_UTILS, ("is_hip", "calculate_settings")),
            Piece("liger_kernel/ops/softmax.py", (
                "_softmax_single_block_forward_kernel", "_softmax_multi_block_forward_kernel",
                "_softmax_forward")),
        ),
        launches=("_softmax_single_block_forward_kernel",),
        defect=Defect(
            "        num_warps = 32 if not is_hip() else 16\n",
            "        num_warps = 4 if not is_hip() else 16\n",
            why="calculate_settings gives rows of 32768 and more 4 warps on CUDA instead of 32 (the\n"
                "ROCm value is untouched, so only NVIDIA runs show it): each of 128 threads holds 256\n"
                "fp32 row elements, far past the register file, so the row spills to local memory.",
            fix="num_warps back to 32 in calculate_settings' `BLOCK_SIZE >= 32768` branch (16-32).",
        ),
        expect=(
            _liger_block("_softmax_single_block_forward_kernel"),
            Knob("num_warps", "_softmax_single_block_forward_kernel", "num_warps = 4 if not is_hip() else 16",
                 "calculate_settings", 4,
                 ("num_warps = 4", "num_warps = 4 if not is_hip() else 16", "num_warps = 16", "num_warps = 8")),
        ),
        grid=_warps_grid(),
    ),
    Target(
        name="liger_cross_entropy", dist="liger-kernel", project="Liger-Kernel",
        kind="cross-entropy loss (online softmax over the vocabulary)",
        upstream_path="src/liger_kernel/ops/cross_entropy.py",
        pieces=(
            Piece("liger_kernel/utils.py", ("infer_device", "is_npu_available")),
            Piece(_LIGER_UTILS, ("is_hip",)),
            Piece("liger_kernel/ops/cross_entropy.py", (
                "LOG2_E", "liger_cross_entropy_kernel", "MAX_FUSED_SIZE", "cross_entropy_forward")),
        ),
        launches=("liger_cross_entropy_kernel",),
        defect=Defect(
            "    MAX_FUSED_SIZE = 65536 // 2\n",
            "    MAX_FUSED_SIZE = 65536 // 64\n",
            why="MAX_FUSED_SIZE (the vocabulary chunk) drops from 32768 to 1024: with the 32 warps\n"
                "the launcher still asks for, each chunk is one element per thread, and a 128k\n"
                "vocabulary becomes a serial chain of 125 tiny iterations per row.",
            fix="MAX_FUSED_SIZE back to 65536 // 2 (16384-32768 with 16-32 warps).",
        ),
        expect=(
            Knob("BLOCK_SIZE", "liger_cross_entropy_kernel",
                 "BLOCK_SIZE = min(MAX_FUSED_SIZE, triton.next_power_of_2(V))", "cross_entropy_forward", 1024),
            Knob("MAX_FUSED_SIZE", "liger_cross_entropy_kernel", "MAX_FUSED_SIZE = 65536 // 64", "<module>",
                 1024, ("MAX_FUSED_SIZE = 4096", "MAX_FUSED_SIZE = 2048", "MAX_FUSED_SIZE = 65536 // 64")),
            Knob("num_warps", "liger_cross_entropy_kernel",
                 "ce_num_warps = 8 if (_input.element_size() == 2 and is_blackwell) else 32",
                 "cross_entropy_forward", 32,
                 ("ce_num_warps = 16", "ce_num_warps = 8 if (_input.element_size() == 2 and is_blackwell) else 32")),
        ),
        grid=Grid(
            {"MAX_FUSED": [2048, 4096, 8192, 16384, 32768, 65536], "num_warps": [8, 16, 32],
             "num_stages": [2, 3, 4]},
            (
                Sub("    MAX_FUSED_SIZE = 65536 // 64\n", "    MAX_FUSED_SIZE = ${MAX_FUSED}\n"),
                Sub("        ce_num_warps = 8 if (_input.element_size() == 2 and is_blackwell) else 32\n",
                    "        ce_num_warps = ${num_warps}\n"),
                Sub("        num_warps=ce_num_warps,\n",
                    "        num_warps=ce_num_warps,\n        num_stages=${num_stages},\n"),
            ),
        ),
    ),
    Target(
        name="liger_geglu", dist="liger-kernel", project="Liger-Kernel",
        kind="elementwise gated activation (GeGLU, tanh GELU)",
        upstream_path="src/liger_kernel/ops/geglu.py",
        pieces=(
            Piece(_LIGER_UTILS, ("is_hip", "device_context", "calculate_settings")),
            Piece("liger_kernel/ops/geglu.py", ("_geglu_tanh_forward_kernel", "geglu_forward")),
        ),
        launches=("_geglu_tanh_forward_kernel",),
        expect=(
            _liger_block("_geglu_tanh_forward_kernel"),
            Knob("num_warps", "_geglu_tanh_forward_kernel", "num_warps = 16", "calculate_settings", 16,
                 _LIGER_SETTINGS_SITES),
        ),
        grid=_warps_grid(),
    ),
    # ----------------------------------------------------------------------- unsloth (Apache-2.0)
    Target(
        name="unsloth_swiglu", dist="unsloth", project="unsloth",
        kind="elementwise gated activation (SwiGLU, flat 1-D blocks)",
        upstream_path="unsloth/kernels/swiglu.py",
        pieces=(
            Piece("unsloth/kernels/swiglu.py", (
                "NUM_INT32_ELEMENTS", "SAFE_INT32_BUFFER_MULTIPLIER", "BLOCK_SIZE", "INT32_SAFETY_BUFFER",
                "_fg_kernel", "swiglu_fg_kernel")),
        ),
        launches=("_fg_kernel",),
        defect=Defect(
            "\nBLOCK_SIZE = 1024\n", "\nBLOCK_SIZE = 128\n",
            why="the module-level BLOCK_SIZE drops from 1024 to 128: with Triton's default 4 warps\n"
                "that is one 2-byte element per thread and ~10^6 tiny programs for a 4x2048x14336\n"
                "activation, so the launch is bound by per-program overhead, not DRAM.",
            fix="BLOCK_SIZE back to 1024 (1024-4096; num_warps is not passed, so 4).",
        ),
        expect=(
            Knob("BLOCK_SIZE", "_fg_kernel", "BLOCK_SIZE = 128", "<module>", 128),
            Knob("num_warps", "_fg_kernel", None, "swiglu_fg_kernel", 4),
        ),
        grid=_unsloth_flat_grid("\nBLOCK_SIZE = 128\n"),
    ),
    Target(
        name="unsloth_geglu", dist="unsloth", project="unsloth",
        kind="elementwise gated activation (GeGLU, exact erf GELU, flat 1-D blocks)",
        upstream_path="unsloth/kernels/geglu.py",
        pieces=(
            Piece("unsloth/kernels/geglu.py", (
                "NUM_INT32_ELEMENTS", "SAFE_INT32_BUFFER_MULTIPLIER", "BLOCK_SIZE", "INT32_SAFETY_BUFFER",
                "_exact_forward_kernel", "geglu_exact_forward_kernel")),
        ),
        launches=("_exact_forward_kernel",),
        expect=(
            Knob("BLOCK_SIZE", "_exact_forward_kernel", "BLOCK_SIZE = 1024", "<module>", 1024),
            Knob("num_warps", "_exact_forward_kernel", None, "geglu_exact_forward_kernel", 4),
        ),
        grid=_unsloth_flat_grid("\nBLOCK_SIZE = 1024\n"),
    ),
    Target(
        name="unsloth_cross_entropy", dist="unsloth", project="unsloth",
        kind="cross-entropy loss (whole vocabulary row in one block)",
        upstream_path="unsloth/kernels/cross_entropy_loss.py",
        pieces=(
            Piece("unsloth/kernels/utils.py", ("MAX_FUSED_SIZE", "next_power_of_2", "is_cdna", "calculate_settings")),
            Piece("unsloth/kernels/cross_entropy_loss.py", (
                "_log1p", "_softplus", "_cross_entropy_forward", "Fast_CrossEntropyLoss",
                "fast_cross_entropy_loss")),
        ),
        launches=("_cross_entropy_forward",),
        notes="Vocabularies above MAX_FUSED_SIZE take unsloth's chunked kernel, which is not "
              "extracted (it needs rope_embedding.py, LGPL): keep vocab <= 65536.",
        defect=Defect(
            "        num_warps = 32\n", "        num_warps = 4\n",
            why="calculate_settings gives 32768-wide blocks (a 32000 vocabulary) 4 warps instead of\n"
                "32: each of 128 threads holds 256 fp32 logits, so the row spills to local memory.",
            fix="num_warps back to 32 in calculate_settings' `BLOCK_SIZE >= 32768` branch (16-32).",
        ),
        expect=(
            Knob("BLOCK_SIZE", "_cross_entropy_forward", "BLOCK_SIZE: int = next_power_of_2(n)",
                 "calculate_settings", None),
            Knob("num_warps", "_cross_entropy_forward", "num_warps = 4", "calculate_settings", 4,
                 ("num_warps: int = 4", "num_warps = 4", "num_warps = 16", "num_warps = 8",
                  "num_warps = num_warps // 2")),
        ),
        grid=_warps_grid(),
    ),
    # ------------------------------------------------------------ flash-linear-attention (MIT)
    Target(
        name="fla_matmul", dist="fla-core", project="flash-linear-attention",
        kind="tiled matmul (tl.dot, grouped order, @triton.autotune over 8 configs)",
        upstream_path="fla/ops/utils/matmul.py",
        pieces=(
            Piece("fla/ops/utils/op.py", ("exp",)),
            Piece("fla/ops/utils/matmul.py", ("matmul_kernel", "leaky_relu", "sigmoid", "tanh", "relu", "matmul")),
        ),
        launches=("matmul_kernel",),
        expect=(
            Knob("configs", "matmul_kernel", "configs=[", "<module>", 8, kind="autotune"),
        ),
        grid=Grid(
            {"BM": [64, 128], "BN": [64, 128, 256], "BK": [32, 64], "num_warps": [4, 8], "num_stages": [3, 4]},
            (
                Sub("    configs=[\n",
                    "    configs=[\n        triton.Config({'BM': ${BM}, 'BK': ${BK}, 'BN': ${BN}, 'G': 4}, "
                    "num_stages=${num_stages}, num_warps=${num_warps}),\n    ],\n",
                    until="    ],\n"),
            ),
        ),
    ),
    Target(
        name="fla_softmax", dist="fla-core", project="flash-linear-attention",
        kind="softmax (row in one block, @triton.autotune over num_warps)",
        upstream_path="fla/ops/utils/softmax.py",
        pieces=(
            Piece("fla/ops/utils/op.py", ("exp",)),
            Piece("fla/ops/utils/softmax.py", ("NUM_WARPS_AUTOTUNE", "softmax_fwd_kernel", "softmax_fwd")),
        ),
        launches=("softmax_fwd_kernel",),
        defect=Defect(
            "[1, 2, 4, 8, 16, 32]", "[1]",
            why="the autotune list is cut to one bad config, num_warps=1: an 8192-wide fp32 row in\n"
                "32 threads is 256 values per thread, so the row spills and one warp per row leaves\n"
                "the SMs nearly idle.",
            fix="NUM_WARPS_AUTOTUNE back to [1, 2, 4, 8, 16, 32] (the autotuner then picks 8-16).",
        ),
        expect=(
            Knob("num_warps", "softmax_fwd_kernel", "NUM_WARPS_AUTOTUNE = [1, 2, 4, 8, 16] if IS_AMD else [1]",
                 "<module>", [1], kind="autotune"),
            Knob("B", "softmax_fwd_kernel", "B = triton.next_power_of_2(D)", "softmax_fwd", None),
        ),
        grid=Grid(
            {"num_warps": _WARPS},
            (Sub("NUM_WARPS_AUTOTUNE = [1, 2, 4, 8, 16] if IS_AMD else [1]\n",
                 "NUM_WARPS_AUTOTUNE = [${num_warps}]\n"),),
        ),
    ),
    # ------------------------------------------------------------------ FlagGems (Apache-2.0)
    Target(
        name="flaggems_log_softmax", dist="flag-gems", project="FlagGems",
        kind="log-softmax (2-D [BLOCK_M, BLOCK_N] tiles, online max/sum over the row)",
        upstream_path="src/flag_gems/ops/log_softmax.py",
        pieces=(
            Piece("flag_gems/utils/triton_lang_extension.py", ("program_id",)),
            Piece("flag_gems/ops/log_softmax.py", ("log_softmax_kernel", "log_softmax")),
        ),
        launches=("log_softmax_kernel",),
        expect=(
            Knob("BLOCK_M", "log_softmax_kernel", "BLOCK_M: tl.constexpr = 8,", "log_softmax_kernel", 8,
                 kind="constexpr-default"),
            Knob("BLOCK_N", "log_softmax_kernel", "BLOCK_N: tl.constexpr = 256,", "log_softmax_kernel", 256,
                 kind="constexpr-default"),
            Knob("num_warps", "log_softmax_kernel", "num_warps=8,", "log_softmax", 8),
        ),
        grid=Grid(
            {"BLOCK_M": [1, 4, 8, 16], "BLOCK_N": [256, 1024, 2048, 4096], "num_warps": [4, 8, 16]},
            (
                Sub("    BLOCK_M: tl.constexpr = 8,\n", "    BLOCK_M: tl.constexpr = ${BLOCK_M},\n"),
                Sub("    BLOCK_N: tl.constexpr = 256,\n", "    BLOCK_N: tl.constexpr = ${BLOCK_N},\n"),
                Sub("            num_warps=8,\n", "            num_warps=${num_warps},\n"),
            ),
        ),
    ),
)

BY_NAME: dict[str, Target] = {t.name: t for t in TARGETS}


def target(name: str) -> Target:
    """The corpus entry called ``name``."""
    return BY_NAME[name]


def expected_knobs(name: str) -> list[dict]:
    """The launch knobs a discovery pass should find in target ``name``, as plain dicts.

    Keys: name, kernel, defined_at, within, value, sites, kind (see ``Knob``). ``value`` is the
    value in effect at the GPU ``BENCH_SHAPE`` (``None`` where it is computed from the shape).
    """
    return [dict(name=k.name, kernel=k.kernel, defined_at=k.defined_at, within=k.within, value=k.value,
                 sites=list(k.sites), kind=k.kind) for k in BY_NAME[name].expect]
