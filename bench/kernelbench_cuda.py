"""A real KernelBench CUDA solution as a profd target, composed at run time from upstream files.

KernelBench (github.com/ScalingIntelligence/KernelBench, MIT) ships, beside its problems,
few-shot examples of solutions written the way its level-1 answers are: a problem file
(``Model``, ``get_inputs``, ``get_init_inputs``) and a solution file whose ``ModelNew`` calls
a ``load_inline`` CUDA extension built at import. This script takes the tiled-matmul pair
(``src/kernelbench/prompts/few_shot/model_ex_tiled_matmul.py`` and
``model_new_ex_tiled_matmul.py``) as upstream wrote them, byte for byte, from a checkout or
a bare mirror, and writes one KernelBench-format file: a header naming repository, paths,
commit and licence, the problem, then the solution. Nothing is rewritten; the only knob is
upstream's own ``constexpr int TILE_SIZE = 16;`` (block = tile x tile, ``cdiv`` grid follows).
The fetched code is never committed: run this where the mirror is, into an ignored folder.

    python bench/kernelbench_cuda.py --repo /path/to/KernelBench[.git] --out .kb
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

UPSTREAM = "https://github.com/ScalingIntelligence/KernelBench"
PROBLEM = "src/kernelbench/prompts/few_shot/model_ex_tiled_matmul.py"
SOLUTION = "src/kernelbench/prompts/few_shot/model_new_ex_tiled_matmul.py"
OUT_NAME = "kb_tiled_matmul.py"


def _git(repo: Path, *args: str) -> str:
    git_dir = repo if (repo / "HEAD").is_file() and not (repo / ".git").exists() else repo / ".git"
    return subprocess.run(["git", "--git-dir", str(git_dir), *args], check=True, capture_output=True,
                          text=True).stdout


def compose(repo: Path) -> str:
    """The one-file target: header, upstream problem, upstream solution."""
    commit = _git(repo, "rev-parse", "HEAD").strip()
    problem = _git(repo, "show", f"{commit}:{PROBLEM}")
    solution = _git(repo, "show", f"{commit}:{SOLUTION}")
    header = (f'"""KernelBench tiled matmul: upstream problem and upstream CUDA solution, unchanged.\n\n'
              f"Source: {UPSTREAM} at commit {commit}\n"
              f"  problem:  {PROBLEM}\n  solution: {SOLUTION}\n"
              "Licence: MIT (KernelBench's LICENSE). Composed by profd's bench/kernelbench_cuda.py;\n"
              "the two files follow one another as upstream wrote them.\n"
              '"""\n')
    return (f"{header}\n# ---- upstream: {PROBLEM}\n{problem}\n"
            f"# ---- upstream: {SOLUTION}\n{solution}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", required=True, help="a KernelBench checkout or bare mirror")
    ap.add_argument("--out", required=True, help="folder to write kb_tiled_matmul.py into (keep it ignored)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / OUT_NAME).write_text(compose(Path(a.repo)))
    print(out / OUT_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
