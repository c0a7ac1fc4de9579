"""The fused CPU kernels against the pure-torch kernels they replace, and a build that cannot hang or leak."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from shutil import which as shutil_which

import psutil
import pytest
import torch

from mixlab.merge import fused as kernels
from mixlab.merge import sign_consensus

ROOT = Path(__file__).resolve().parents[1]
built = pytest.mark.skipif(not kernels.available(), reason=f"fused kernels unavailable here: {kernels._failed}")
can_build = pytest.mark.skipif(
    shutil_which("c++") is None or torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
    reason="no C++ compiler or no AVX2 here: the kernels are never built",
)


@built
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


@built
@pytest.mark.parametrize("name", ["ties", "dare_ties"])
def test_a_method_declares_its_fused_kernel_and_it_equals_the_hand_computed_merge(name):
    from mixlab.merge import get_method

    method = get_method(name)
    params = method.resolve({"scale": 0.5})
    base, stacked, w = (
        torch.tensor([1.0, 2.0, 3.0]),
        torch.tensor([[1.0, -2.0, 0.0], [3.0, 1.0, -1.0]]),
        torch.tensor([0.25, 0.75]),
    )
    out = torch.empty(3)
    assert method.fused is not None and method.fused(base, stacked, w, out, params)
    # entry 0: both agree (+): (0.25·1 + 0.75·3) / 1 = 2.5; entry 1: Σ w τ = -0.5 + 0.75 > 0, only expert 2
    # agrees: 0.75·1 / 0.75 = 1; entry 2: elected −, expert 2 alone: −1 → θ = θ_0 + 0.5·τ_m
    torch.testing.assert_close(out, torch.tensor([1.0 + 0.5 * 2.5, 2.0 + 0.5 * 1.0, 3.0 - 0.5]))


@built
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


def _loader(tmp_path, **env) -> subprocess.Popen:
    """A process that loads the kernels with a fresh build folder (so it really builds)."""
    env = os.environ | {"MIXLAB_KERNELS_DIR": str(tmp_path)} | env
    env.pop("MIXLAB_NO_KERNELS", None)
    code = "from mixlab.merge import fused; print(fused.available(), flush=True)"
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _alive(procs) -> list:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _slow_compiler(tmp_path) -> str:
    """A C++ compiler that first sleeps a minute: a build that is still running when the test acts."""
    script = tmp_path / "slow-c++"
    script.write_text('#!/bin/sh\nsleep 60\nexec c++ "$@"\n')
    script.chmod(0o755)
    return str(script)


def _built(folder: Path) -> list[str]:
    """Builds renamed into place (a private ``.name.*`` folder is one still being written)."""
    return [p.name for p in folder.iterdir() if p.name.startswith("mixlab_kernels_")]


@can_build
def test_a_fresh_build_compiles_loads_and_is_kept(tmp_path):
    proc = _loader(tmp_path / "kernels")
    out, err = proc.communicate(timeout=240)
    assert out.strip() == "True", err
    (name,) = _built(tmp_path / "kernels")
    assert (tmp_path / "kernels" / name / f"{name}.so").is_file()


@can_build
def test_a_build_over_its_time_limit_falls_back_with_a_notice_and_leaves_nothing(tmp_path):
    builds = tmp_path / "kernels"
    proc = _loader(builds, MIXLAB_KERNEL_BUILD_TIMEOUT="0.5", CXX=_slow_compiler(tmp_path))
    out, err = proc.communicate(timeout=120)
    assert out.strip() == "False"
    assert "fused CPU merge kernels unavailable (TimeoutError: the build took over 0.5 s" in err
    assert "using the torch kernels" in err and len(err.strip().splitlines()) == 1  # one line
    assert not list(builds.iterdir())  # no half-built folder, nothing renamed into place


@can_build
def test_killing_the_process_while_its_kernels_build_leaves_no_compiler_behind(tmp_path):
    builds = tmp_path / "kernels"
    proc = _loader(builds, CXX=_slow_compiler(tmp_path))
    parent = psutil.Process(proc.pid)
    seen: dict[int, psutil.Process] = {}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        for child in parent.children(recursive=True):
            seen.setdefault(child.pid, child)
        if any(p.name() == "sleep" for p in _alive(seen.values())):  # the compiler's process is under way
            break
        time.sleep(0.05)
    else:
        pytest.fail(
            f"no compiler started within 240 s (exit {proc.poll()}: {proc.stderr.read() if proc.stderr else ''})"
        )
    for child in parent.children(recursive=True):
        seen.setdefault(child.pid, child)
    os.kill(proc.pid, signal.SIGKILL)  # like stopping the app server hard
    proc.wait()
    deadline = time.monotonic() + 20
    while _alive(seen.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(seen.values()), [p.name() for p in _alive(seen.values())]
    assert not _built(builds)  # nothing half-built in place


def test_the_build_is_keyed_by_its_source_compiler_and_flags(monkeypatch):
    from mixlab.merge import fused

    monkeypatch.delenv("CXX", raising=False)
    here = fused._build_name()
    assert here.startswith("mixlab_kernels_") and fused._build_name() == here
    monkeypatch.setenv("CXX", "clang++")
    assert fused._build_name() != here
    monkeypatch.delenv("CXX")
    monkeypatch.setattr(fused, "_CFLAGS", [*fused._CFLAGS, "-march=native"])
    assert fused._build_name() != here
    monkeypatch.setattr(fused, "_SOURCE", fused._SOURCE + "// edited\n")
    assert fused._build_name() != here
