"""The CUDA path: merge and evaluate on a GPU (bf16) agree with the CPU (fp32). Skipped, with the reason
shown, where no CUDA device is present."""

import pytest
import torch

from mixlab.engine import Engine
from mixlab.lab import load_lab
from mixlab.scoring import checkpoints
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


@pytest.mark.parametrize(
    "method,params",
    [
        ("linear", {}),
        ("task_arithmetic", {"scale": 1.5}),
        ("ties", {"density": 0.5}),
        ("dare_linear", {"drop_rate": 0.3}),
        ("dare_ties", {}),
    ],
)
def test_cuda_merge_equals_cpu_merge(full_lab_dir, tmp_path, method, params):
    """The in-memory merge on the GPU writes the CPU's tensors (DARE draws the same drops on both)."""
    lab = load_lab(full_lab_dir)
    m = Mixture.of(lab.expert_names, [0.3, 0.7])
    merged = {}
    for device in ("cpu", "cuda"):
        eng = Engine(lab, Store(tmp_path / f"{device}.sqlite"), device=device)
        eng.resident.load_merge(eng.spec(m, method, params))
        merged[device] = {k: eng.resident._params[k].float().cpu() for k in eng.resident._merger.keys}
    for k, a in merged["cpu"].items():
        torch.testing.assert_close(merged["cuda"][k], a, rtol=1e-2, atol=1e-3)  # bf16 on the GPU


def test_cuda_checkpoints_and_generation(full_lab_dir, tiny_lab_dir, tmp_path):
    """Checkpoints on the GPU score as on the CPU; generation runs batched with a batch size taken from
    free memory."""
    lab = load_lab(full_lab_dir)
    cpu = checkpoints.expert_scores(Engine(lab, Store(tmp_path / "cpu.sqlite"), device="cpu"), ["rev-loss"])
    gpu = checkpoints.expert_scores(Engine(lab, Store(tmp_path / "gpu.sqlite"), device="cuda"), ["rev-loss"])
    assert [e.score for e in gpu] == pytest.approx([e.score for e in cpu], rel=2e-2)
    lora = Engine(load_lab(tiny_lab_dir), Store(tmp_path / "gen.sqlite"), device="cuda")
    assert lora.batch_size >= 64  # a tiny model on a GPU: free memory allows large batches
    grid = [Mixture.of(lora.names, w) for w in grid_from_step(3, 0.5)]
    rows = lora.sweep(grid, benchmarks=["rev"])
    assert all(r.device.endswith("(batched)") and 0.0 <= r.score <= 1.0 for r in rows)
