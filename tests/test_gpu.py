"""The CUDA path: merge and evaluate on a GPU (bf16) agree with the CPU (fp32). Skipped, with the reason
shown, where no CUDA device is present."""

import pytest
import torch

from mixlab.engine import Engine
from mixlab.lab import load_lab
from mixlab.simplex import Mixture, grid_from_step
from mixlab.store import Store

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]


def test_cuda_proxy_scores_match_cpu(tiny_lab_dir, tmp_path):
    lab = load_lab(tiny_lab_dir)
    grid = [Mixture.of(lab.expert_names, w) for w in grid_from_step(3, 0.5)]
    cpu = Engine(lab, Store(tmp_path / "cpu.sqlite"), device="cpu").sweep(grid, benchmarks=["rev-loss"])
    for path in ("materialize", "batched"):
        gpu = Engine(lab, Store(tmp_path / f"{path}.sqlite"), device="cuda").sweep(
            grid, benchmarks=["rev-loss"], path=path
        )
        for a, b in zip(cpu, gpu):
            assert b.score == pytest.approx(a.score, rel=2e-2), path  # bf16 on the GPU
            assert b.device.startswith("cuda")
