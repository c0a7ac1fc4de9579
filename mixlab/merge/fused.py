"""Fused CPU kernels: plain C++ over float pointers (no torch headers), compiled on first use with the
system's C++ compiler into a shared library loaded with ctypes, and optional: when they cannot be built (no compiler, no AVX2, a build over MIXLAB_KERNEL_BUILD_TIMEOUT
seconds, MIXLAB_NO_KERNELS=1), callers fall back to the pure-torch kernels in mixlab.merge.methods,
which are also the reference the tests compare these against.

TIES's sign election and disjoint mean touch every entry of K task vectors several times; as separate
torch ops that is ~10 passes (compute-bound on a CPU: ~0.04× memcpy). The fused AVX2 loops read
each input once and write once, so a re-merge runs at memory bandwidth (bench/merge.py).

Why plain C++ and ctypes rather than torch's extension loader: the loader compiles against torch's headers
(torch/extension.h, pybind11), 39 s of compiler CPU for two loops (and, on a loaded machine,
past the build's time limit), where this file alone compiles in about half a second of CPU. A ctypes call
also releases the GIL while the loops run.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from pathlib import Path

from mixlab.lazy import torch

_SOURCE = r"""
#include <cstdint>
#include <immintrin.h>

// out[i] = base[i] + scale * m[i], where s = Σ_k w_k t_k[i]; agreeing k: t_k[i]·s > 0;
// m = Σ_agree w_k t_k / Σ_agree w_k (normalize) or Σ_agree w_k t_k; m = 0 when nothing agrees.
// AVX2: 8 entries at a time, every row of the K task vectors read once, masks instead of branches.
static inline float one(const float* d, const float* wp, int64_t K, int64_t n, int64_t i, bool normalize) {
  float s = 0.f, num = 0.f, den = 0.f;
  for (int64_t k = 0; k < K; ++k) s += wp[k] * d[k * n + i];
  for (int64_t k = 0; k < K; ++k) {
    const float t = d[k * n + i];
    if (t * s > 0.f) { num += wp[k] * t; den += wp[k]; }
  }
  return normalize ? (den > 0.f ? num / den : 0.f) : num;
}

// base, out: (n,); stacked: (K, n) row-major; w: (K,)
extern "C" void sign_consensus(const float* b, const float* d, const float* wp, float* o, int64_t n, int64_t K,
                               double scale, int normalize) {
  const float sc = static_cast<float>(scale);
  const int64_t n8 = n - n % 8;
  const __m256 zero = _mm256_setzero_ps(), vsc = _mm256_set1_ps(sc);
  #pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n8; i += 8) {
    __m256 s = zero, num = zero, den = zero;
    for (int64_t k = 0; k < K; ++k) s = _mm256_fmadd_ps(_mm256_set1_ps(wp[k]), _mm256_loadu_ps(d + k * n + i), s);
    for (int64_t k = 0; k < K; ++k) {
      const __m256 t = _mm256_loadu_ps(d + k * n + i), wk = _mm256_set1_ps(wp[k]);
      const __m256 agree = _mm256_cmp_ps(_mm256_mul_ps(t, s), zero, _CMP_GT_OQ);
      num = _mm256_add_ps(num, _mm256_and_ps(agree, _mm256_mul_ps(wk, t)));
      den = _mm256_add_ps(den, _mm256_and_ps(agree, wk));
    }
    __m256 m = num;
    if (normalize) {
      const __m256 some = _mm256_cmp_ps(den, zero, _CMP_GT_OQ);
      m = _mm256_and_ps(some, _mm256_div_ps(num, _mm256_blendv_ps(_mm256_set1_ps(1.f), den, some)));
    }
    _mm256_storeu_ps(o + i, _mm256_fmadd_ps(vsc, m, _mm256_loadu_ps(b + i)));
  }
  for (int64_t i = n8; i < n; ++i) o[i] = b[i] + sc * one(d, wp, K, n, i, normalize);
}

// out[i] = base[i] + Σ_k c_k t_k[i]: a linear merge in one pass over memory.
// base, out: (n,); stacked: (K, n) row-major; c: (K,)
extern "C" void weighted_sum(const float* b, const float* d, const float* cp, float* o, int64_t n, int64_t K) {
  const int64_t n8 = n - n % 8;
  #pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n8; i += 8) {
    __m256 acc = _mm256_loadu_ps(b + i);
    for (int64_t k = 0; k < K; ++k) acc = _mm256_fmadd_ps(_mm256_set1_ps(cp[k]), _mm256_loadu_ps(d + k * n + i), acc);
    _mm256_storeu_ps(o + i, acc);
  }
  for (int64_t i = n8; i < n; ++i) {
    float acc = b[i];
    for (int64_t k = 0; k < K; ++k) acc += cp[k] * d[k * n + i];
    o[i] = acc;
  }
}
"""

_lock = threading.Lock()
_module = None
_failed: str | None = None

BUILD_TIMEOUT = 300.0  # seconds; MIXLAB_KERNEL_BUILD_TIMEOUT overrides. A build takes ~0.5 s of CPU.
STALE_BUILD_SECONDS = 3600  # a private build folder this old was left by a killed build: removed
_CFLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC"]


def _compiler() -> list[str]:
    """``$CXX`` (split as a shell would), else ``c++``."""
    import shlex

    return shlex.split(os.environ.get("CXX") or "c++")


def _build_name() -> str:
    """Keyed by what makes the library: the source, the compiler command and its flags."""
    tag = hashlib.sha256("\0".join([_SOURCE, *_compiler(), *_CFLAGS]).encode()).hexdigest()[:12]
    return f"mixlab_kernels_{tag}"


def _build_root() -> Path:
    """``MIXLAB_KERNELS_DIR``, else ``$XDG_CACHE_HOME/mixlab/kernels`` (``~/.cache/mixlab/kernels``)."""
    if os.environ.get("MIXLAB_KERNELS_DIR"):
        return Path(os.environ["MIXLAB_KERNELS_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mixlab" / "kernels"


def _import(folder: Path, name: str):
    """The library, its two functions typed (a ctypes call releases the GIL while the loops run)."""
    import ctypes

    lib = ctypes.CDLL(str(folder / f"{name}.so"))
    f32, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.sign_consensus.argtypes = [f32, f32, f32, f32, i64, i64, ctypes.c_double, ctypes.c_int]
    lib.weighted_sum.argtypes = [f32, f32, f32, f32, i64, i64]
    lib.sign_consensus.restype = lib.weighted_sum.restype = None
    return lib


def _build(root: Path, name: str, timeout: float) -> Path:
    """Compile into a private folder and rename it into place (atomic: no lock, nothing half-built is ever
    seen); two processes building at once each build, the first rename wins. Returns the final folder."""
    import shutil
    import subprocess
    import tempfile

    from mixlab.owner import kill_tree

    final = root / name
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob(f".{name}.*"):  # left by a killed build
        if time.time() - old.stat().st_mtime > STALE_BUILD_SECONDS:
            shutil.rmtree(old, ignore_errors=True)
    private = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        (private / "source.cpp").write_text(_SOURCE)
        command = [*_compiler(), *_CFLAGS, str(private / "source.cpp"), "-o", str(private / f"{name}.so")]
        package_root = str(Path(__file__).resolve().parents[2])  # so the child imports this mixlab
        env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        proc = subprocess.Popen(
            [sys.executable, "-m", "mixlab.merge.kernel_build", *command],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"the build took over {timeout:g} s (MIXLAB_KERNEL_BUILD_TIMEOUT)") from None
        finally:  # whatever happened (a timeout, an interrupt), no process of the build outlives this call
            if proc.poll() is None:
                kill_tree(proc.pid)
            proc.wait()
        if proc.returncode != 0:
            tail = out.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            raise RuntimeError(tail[0][:300])
        try:
            private.rename(final)
        except OSError:  # another process put its build there first
            if not (final / f"{name}.so").is_file():
                raise
        return final
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _load():
    """The compiled library, built on first use; None (with the reason in ``_failed``, said once on stderr)
    when it cannot be had: callers then use the pure-torch kernels."""
    global _module, _failed
    with _lock:
        if _module is None and _failed is None:
            if os.environ.get("MIXLAB_NO_KERNELS"):
                _failed = "disabled by MIXLAB_NO_KERNELS"
                return None
            if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
                _failed = f"needs AVX2; this CPU offers {torch.backends.cpu.get_cpu_capability()}"
                return None
            name, root = _build_name(), _build_root()
            try:
                timeout = float(os.environ.get("MIXLAB_KERNEL_BUILD_TIMEOUT") or BUILD_TIMEOUT)
                folder = root / name
                if not (folder / f"{name}.so").is_file():
                    folder = _build(root, name, timeout)
                _module = _import(folder, name)
            except Exception as e:  # no compiler, a timeout, a broken build: the torch kernels still work
                _failed = f"{type(e).__name__}: {e}"
                print(
                    f"mixlab: fused CPU merge kernels unavailable ({_failed}); using the torch kernels", file=sys.stderr
                )
    return _module


def available() -> bool:
    return _load() is not None


def _applies(base: torch.Tensor, stacked: torch.Tensor, weights: torch.Tensor, out: torch.Tensor) -> bool:
    """float32, contiguous, on the CPU, shaped (n,), (K, n…), (K,), (n,) in entries, and the library at hand."""
    tensors = (base, stacked, weights, out)
    k, n = weights.numel(), base.numel()
    return (
        all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors)
        and stacked.dim() > 0
        and stacked.shape[0] == k
        and stacked.numel() == k * n
        and out.numel() == n
        and _load() is not None
    )


def sign_consensus(
    base: torch.Tensor, stacked: torch.Tensor, weights: torch.Tensor, out: torch.Tensor, scale: float, normalize: bool
) -> bool:
    """Fused TIES steps 2-3 (see mixlab.merge.methods.sign_consensus) into ``out``; False where it does not apply."""
    if not _applies(base, stacked, weights, out):
        return False
    _module.sign_consensus(
        base.data_ptr(), stacked.data_ptr(), weights.data_ptr(), out.data_ptr(), base.numel(), weights.numel(),
        float(scale), int(bool(normalize)),
    )  # fmt: skip
    return True


def weighted_sum(base: torch.Tensor, stacked: torch.Tensor, coef: torch.Tensor, out: torch.Tensor) -> bool:
    """out = base + Σ_k coef_k stacked_k in one pass; False where it does not apply."""
    if not _applies(base, stacked, coef, out):
        return False
    _module.weighted_sum(
        base.data_ptr(), stacked.data_ptr(), coef.data_ptr(), out.data_ptr(), base.numel(), coef.numel()
    )
    return True
