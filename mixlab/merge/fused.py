"""Fused CPU kernels, compiled on first use with torch's C++ extension loader (gcc + ninja), and
optional: when they cannot be built, callers fall back to the pure-torch kernels in mixlab.merge.methods,
which are also the reference the tests compare these against.

TIES's sign election and disjoint mean touch every entry of K task vectors several times; as separate
torch ops that is ~10 passes (compute-bound on a CPU: ~0.04× memcpy). The fused AVX2 loops read
each input once and write once, so a re-merge runs at memory bandwidth (bench/merge.py).
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from pathlib import Path

import torch

_SOURCE = r"""
#include <torch/extension.h>
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

void sign_consensus(torch::Tensor base, torch::Tensor stacked, torch::Tensor w, torch::Tensor out,
                    double scale, bool normalize) {
  const int64_t n = base.numel();
  const int64_t K = stacked.size(0);
  const float* b = base.data_ptr<float>();
  const float* d = stacked.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  float* o = out.data_ptr<float>();
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
void weighted_sum(torch::Tensor base, torch::Tensor stacked, torch::Tensor c, torch::Tensor out) {
  const int64_t n = base.numel();
  const int64_t K = stacked.size(0);
  const float* b = base.data_ptr<float>();
  const float* d = stacked.data_ptr<float>();
  const float* cp = c.data_ptr<float>();
  float* o = out.data_ptr<float>();
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


def _build_name() -> str:
    """Keyed by source, torch version and environment: two venvs (or checkouts) sharing
    ~/.cache/torch_extensions keep a build each (one build folder for two venvs made ninja rebuild on
    every switch, since the compile command names each venv's include paths)."""
    tag = hashlib.sha256(f"{_SOURCE}\0{torch.__version__}\0{sys.prefix}".encode()).hexdigest()[:12]
    return f"mixlab_kernels_{tag}"


STALE_LOCK_SECONDS = 600  # a build takes about a minute; a lock this old was left by a killed process


def _clear_stale_lock(name: str) -> None:
    """torch's extension builder waits forever on the ``lock`` file of a build whose process was killed;
    remove one that old so the next load builds instead of hanging."""
    from torch.utils.cpp_extension import _get_build_directory

    lock = Path(_get_build_directory(name, verbose=False)) / "lock"
    try:
        if time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
            lock.unlink()
    except FileNotFoundError:
        pass


def _load():
    global _module, _failed
    with _lock:
        if _module is None and _failed is None:
            if os.environ.get("MIXLAB_NO_KERNELS"):
                _failed = "disabled by MIXLAB_NO_KERNELS"
                return None
            if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
                _failed = f"needs AVX2; this CPU offers {torch.backends.cpu.get_cpu_capability()}"
                return None
            try:
                from torch.utils.cpp_extension import load_inline

                _clear_stale_lock(_build_name())
                _module = load_inline(
                    name=_build_name(),
                    cpp_sources=_SOURCE,
                    functions=["sign_consensus", "weighted_sum"],
                    extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp"],
                    extra_ldflags=["-fopenmp"],
                    verbose=False,
                )
            except Exception as e:  # no compiler or ninja: the torch kernels still work
                _failed = f"{type(e).__name__}: {e}"
    return _module


def available() -> bool:
    return _load() is not None


def _applies(*tensors: torch.Tensor) -> bool:
    return (
        all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors)
        and _load() is not None
    )


def sign_consensus(
    base: torch.Tensor, stacked: torch.Tensor, weights: torch.Tensor, out: torch.Tensor, scale: float, normalize: bool
) -> bool:
    """Fused TIES steps 2-3 (see mixlab.merge.methods.sign_consensus) into ``out``; False where it does not apply."""
    if not _applies(base, stacked, weights, out):
        return False
    _module.sign_consensus(
        base.view(-1), stacked.view(stacked.shape[0], -1), weights, out.view(-1), float(scale), bool(normalize)
    )
    return True


def weighted_sum(base: torch.Tensor, stacked: torch.Tensor, coef: torch.Tensor, out: torch.Tensor) -> bool:
    """out = base + Σ_k coef_k stacked_k in one pass; False where it does not apply."""
    if not _applies(base, stacked, coef, out):
        return False
    _module.weighted_sum(base.view(-1), stacked.view(stacked.shape[0], -1), coef, out.view(-1))
    return True
