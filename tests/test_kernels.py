"""The fused CPU kernels against the pure-torch kernels they replace."""

import pytest
import torch

from mixlab.merge import fused as kernels
from mixlab.merge import sign_consensus

pytestmark = pytest.mark.skipif(not kernels.available(), reason=f"fused kernels unavailable here: {kernels._failed}")


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [7, 64, 1001])
@pytest.mark.parametrize("normalize", [True, False])
def test_fused_ties_equals_torch(k, n, normalize):
    g = torch.Generator().manual_seed(k * 1000 + n)
    base = torch.randn(n, generator=g)
    stacked = torch.randn(k, n, generator=g) * (torch.rand(k, n, generator=g) < 0.3)
    w = torch.rand(k, generator=g)
    w[0] = 0.0  # a zero weight must change nothing
    w = w / w.sum()
    out = torch.empty(n)
    assert kernels.sign_consensus(base, stacked, w, out, 0.7, normalize)
    ref = sign_consensus(base, stacked, w, {"normalize": normalize, "scale": 0.7})
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("n", [5, 4096, 10_003])
def test_fused_linear_equals_torch(n):
    base, stacked, c = torch.randn(n), torch.randn(3, n), torch.tensor([0.2, 0.0, 0.8])
    out = torch.empty(n)
    assert kernels.weighted_sum(base, stacked, c, out)
    torch.testing.assert_close(out, base + 0.2 * stacked[0] + 0.8 * stacked[2], atol=1e-6, rtol=1e-6)


def test_kernels_refuse_what_they_cannot_do():
    n = 16
    assert not kernels.weighted_sum(
        torch.randn(n, dtype=torch.float64),
        torch.randn(2, n, dtype=torch.float64),
        torch.ones(2, dtype=torch.float64),
        torch.empty(n, dtype=torch.float64),
    )
    assert not kernels.sign_consensus(
        torch.randn(n), torch.randn(2, 2 * n)[:, ::2], torch.ones(2) / 2, torch.empty(n), 1.0, True
    )


def test_a_killed_builds_lock_does_not_hang_the_next_load(tmp_path, monkeypatch):
    """torch's builder waits forever on the lock of a build whose process was killed: an old one goes."""
    import os
    import time

    from mixlab.merge import fused

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    folder = tmp_path / "mixlab_kernels_x"
    folder.mkdir()
    lock = folder / "lock"
    lock.touch()
    fused._clear_stale_lock("mixlab_kernels_x")
    assert lock.exists()  # a build in progress keeps its lock
    old = time.time() - fused.STALE_LOCK_SECONDS - 5
    os.utime(lock, (old, old))
    fused._clear_stale_lock("mixlab_kernels_x")
    assert not lock.exists()


def test_each_environment_keeps_its_own_kernel_build(monkeypatch):
    import sys

    from mixlab.merge import fused

    here = fused._build_name()
    monkeypatch.setattr(sys, "prefix", "/elsewhere/.venv")
    assert fused._build_name() != here and fused._build_name().startswith("mixlab_kernels_")
