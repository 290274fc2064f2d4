"""Inputs are drawn where they are measured: a KernelBench ``get_inputs()`` makes CPU tensors by
convention, and at GPU sizes drawing them on the CPU and copying them cost seconds per child
(kernelbench_relu, 256 MB per set, nine sets per child). ``verify.make_inputs`` runs the file's
factory calls with the measuring device as torch's default; a file that needs CPU tensors still
gets them. The meta device stands in for a GPU here (same branch: any device but the CPU)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch

from profd.harness import verify as V
from profd.harness.target import load_target


def _kernelbench(tmp_path: Path, get_inputs: str) -> Path:
    f = tmp_path / "kb.py"
    f.write_text(textwrap.dedent('''
        import torch
        import torch.nn as nn

        SEEN = []

        class Model(nn.Module):
            def forward(self, x):
                return torch.relu(x)

        class ModelNew(Model):
            pass

        def get_init_inputs():
            return []
    ''') + textwrap.dedent(get_inputs))
    return f


def test_a_kernelbench_get_inputs_draws_on_the_measuring_device(tmp_path: Path) -> None:
    t = load_target(_kernelbench(tmp_path, '''
        def get_inputs():
            SEEN.append(str(torch.get_default_device()))
            return [torch.randn(64, 32)]
    '''))
    meta = V.make_inputs(t, {}, 7, torch.device("meta"))
    assert meta[0].device.type == "meta"
    assert t.module.SEEN == ["meta"]  # drawn there, not drawn on the CPU and copied
    cpu = V.make_inputs(t, {}, 7, torch.device("cpu"))
    assert t.module.SEEN == ["meta", "cpu"]
    assert torch.equal(cpu[0], V.make_inputs(t, {}, 7, torch.device("cpu"))[0])  # seeded: the same set again
    assert torch.get_default_device().type == "cpu"  # the default is restored


def test_a_get_inputs_that_needs_cpu_tensors_still_gets_them(tmp_path: Path) -> None:
    t = load_target(_kernelbench(tmp_path, '''
        def get_inputs():
            SEEN.append(str(torch.get_default_device()))
            x = torch.randn(16, 8)
            return [torch.from_numpy(x.numpy().copy())]  # .numpy() needs a CPU tensor
    '''))
    got = V.make_inputs(t, {}, 3, torch.device("meta"))
    assert got[0].device.type == "meta" and tuple(got[0].shape) == (16, 8)
    assert t.module.SEEN == ["meta", "cpu"]  # tried on the device, drawn on the CPU
