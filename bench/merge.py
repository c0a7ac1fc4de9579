"""Merge throughput: in-memory re-merges vs a memcpy measured in the same run.

    python bench/merge.py [--layers 24] [--hidden 1024] [--repeats 5] [--device cpu|cuda] [--mergekit]

Builds a Llama-shaped base (default ≈0.37B params) and 3 bf16 full fine-tune experts as safetensors in a
temp folder, loads them once into a :class:`mixlab.merge.Merger`, and times re-merging new mixtures
into a preallocated float32 model. Throughput counts the bytes a merge moves: the float32 base and the
K float32 task vectors (or prepared TIES vectors) read, the float32 model written — 20 bytes/param. The memcpy reference is
``dst.copy_(src)`` on a float32 buffer as large as the model (read + write). Also times the streamed
disk→disk merge (``save_merged``), putting one checkpoint into the model with the engine's shared float32
θ_0 vs a θ_0 of its own, and, with --mergekit and mergekit-yaml on PATH, mergekit on the
same files. ``--device cuda`` keeps θ_0, the task vectors and the model on the GPU and times against a
device-to-device copy (CUDA is synchronised before each clock read). Prints medians and ratios; nothing
here asserts a time.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mixlab.checkpoint import load_base  # noqa: E402
from mixlab.experts import load_task_vector  # noqa: E402
from mixlab.merge import Merger, MergeSpec, get_method, save_merged  # noqa: E402


def llama_state(layers: int, hidden: int, inter: int, vocab: int, seed: int, base: dict | None = None) -> dict:
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "model.embed_tokens.weight": (vocab, hidden),
        "lm_head.weight": (vocab, hidden),
        "model.norm.weight": (hidden,),
    }
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "self_attn.q_proj.weight": (hidden, hidden),
            p + "self_attn.k_proj.weight": (hidden, hidden),
            p + "self_attn.v_proj.weight": (hidden, hidden),
            p + "self_attn.o_proj.weight": (hidden, hidden),
            p + "mlp.gate_proj.weight": (inter, hidden),
            p + "mlp.up_proj.weight": (inter, hidden),
            p + "mlp.down_proj.weight": (hidden, inter),
            p + "input_layernorm.weight": (hidden,),
            p + "post_attention_layernorm.weight": (hidden,),
        }
    out = {}
    for k, shape in shapes.items():
        t = torch.randn(shape, generator=g) * 0.02
        out[k] = (t if base is None else base[k].float() + 0.1 * t).to(torch.bfloat16)
    return out


def write_model(folder: Path, state: dict, layers: int, hidden: int, inter: int, vocab: int) -> None:
    folder.mkdir(parents=True)
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "hidden_size": hidden,
                "intermediate_size": inter,
                "num_hidden_layers": layers,
                "num_attention_heads": hidden // 64,
                "num_key_value_heads": hidden // 64,
                "vocab_size": vocab,
                "torch_dtype": "bfloat16",
                "tie_word_embeddings": False,
            }
        )
    )


MERGEKIT_VENV = Path(__file__).resolve().parent / ".mergekit-venv"


def install_mergekit() -> str | None:
    """mergekit in its own venv (never a project dependency), torch pinned to the local CPU build so
    pip does not pull CUDA wheels."""
    exe = MERGEKIT_VENV / "bin" / "mergekit-yaml"
    if not exe.exists():
        print(f"installing mergekit 0.1.5 into {MERGEKIT_VENV} …", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(MERGEKIT_VENV)], check=True)
        r = subprocess.run(
            [str(MERGEKIT_VENV / "bin" / "pip"), "install", "-q", "torch==2.13.0", "mergekit==0.1.5"],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            print(r.stderr[-2000:])
            return None
    return str(exe)


def time_mergekit(exe: str, tmp: Path, method: str, repeats: int) -> float:
    """Median whole-process time of mergekit-yaml merging e0..e2 with weights 0.2/0.3/0.5 (TIES: density
    0.2 over the base, normalised, as mixlab's default)."""
    per_model = "      density: 0.2\n" if method == "ties" else ""
    header = f"merge_method: {method}\ndtype: bfloat16\n"
    if method == "ties":
        header += f"base_model: {tmp / 'base'}\nparameters:\n  normalize: true\n"
    models = "".join(
        f"  - model: {tmp / f'e{i}'}\n    parameters:\n      weight: {w}\n{per_model}"
        for i, w in enumerate((0.2, 0.3, 0.5))
    )
    cfg = tmp / f"mk-{method}.yaml"
    cfg.write_text(header + "models:\n" + models)
    cmd = [exe, str(cfg), str(tmp / "mk"), "--allow-crimes"]
    return median_time(lambda: subprocess.run(cmd, check=True, capture_output=True), repeats)


YAML_CHECKS = [
    ("linear", {}),
    ("task_arithmetic", {"scale": 0.7}),
    ("ties", {"density": 0.2}),
    ("ties", {"density": 0.5, "normalize": False, "scale": 1.5}),
]
BF16_TOL = 2**-7  # max |Δ| over max |θ| per tensor: two bf16 roundings apart at most


def check_mergekit_yaml(exe: str, lab_dir: Path, tmp: Path, name: str) -> bool:
    """mergekit run on the config `mixlab merge --mergekit-yaml` writes gives mixlab's own export of the
    same merge, tensor by tensor, within bf16 rounding (DARE is left out: its drops are random in both)."""
    from safetensors.torch import load_file

    from mixlab.engine import Engine
    from mixlab.interop.mergekit import to_mergekit
    from mixlab.lab import load_lab
    from mixlab.store import Store

    engine = Engine(load_lab(lab_dir), Store(":memory:"), device="cpu")
    mixture = engine.mixture([0.2, 0.3, 0.5])
    ok = True
    for method, params in YAML_CHECKS:
        ours, theirs, cfg = tmp / "yaml-ours", tmp / "yaml-mk", tmp / "check.yml"
        engine.export(mixture, ours, method, params, overwrite=True)
        cfg.write_text(to_mergekit(engine, mixture, method, params)[0])
        shutil.rmtree(theirs, ignore_errors=True)
        cmd = [exe, str(cfg), str(theirs), "--allow-crimes", "--lora-merge-cache", str(tmp / "lora-cache")]
        subprocess.run(cmd, check=True, capture_output=True)
        a = {k: v for f in ours.glob("*.safetensors") for k, v in load_file(f).items()}
        b = {k: v for f in theirs.glob("*.safetensors") for k, v in load_file(f).items()}
        worst, off, n = 0.0, 0, 0
        for k in a:
            x, y = a[k].float(), b[k].float()
            scale = x.abs().max().clamp_min(1e-12)
            worst = max(worst, ((x - y).abs().max() / scale).item())
            off += int(((x - y).abs() > BF16_TOL * scale).sum())
            n += x.numel()
        same = set(a) == set(b) and worst <= BF16_TOL
        ok &= same
        print(
            f"  {name:<8} {method:<16} {json.dumps(params):<48} {len(a)} tensors, worst max|Δ|/max|θ| {worst:.1e}, "
            f"{off / n:.4%} of entries beyond bf16  {'ok' if same else 'DIFFERENT'}"
        )
    return ok


def median_time(fn, repeats: int, device: str = "cpu") -> float:
    """Median wall time of ``fn``; on CUDA the queue is drained before each clock read."""

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--inter", type=int, default=2816)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="cpu or cuda: where θ_0, the task vectors and the model live")
    ap.add_argument(
        "--mergekit", action="store_true", help="also time mergekit-yaml (installed into bench/.mergekit-venv)"
    )
    ap.add_argument(
        "--yaml-check",
        action="store_true",
        help="only check mergekit on mixlab's --mergekit-yaml configs (demo-k3's LoRA experts; a small full lab)",
    )
    args = ap.parse_args()
    dims = (args.layers, args.hidden, args.inter, args.vocab)
    if args.yaml_check:
        dims = (2, 256, 512, 1000)
    tmp = Path(tempfile.mkdtemp(prefix="mixlab-bench-"))
    try:
        base_state = llama_state(*dims, seed=0)
        n_params = sum(t.numel() for t in base_state.values())
        write_model(tmp / "base", base_state, *dims)
        for i in range(3):
            write_model(tmp / f"e{i}", llama_state(*dims, seed=i + 1, base=base_state), *dims)
        del base_state
        if args.yaml_check:
            exe = shutil.which("mergekit-yaml") or install_mergekit()
            if exe is None:
                raise SystemExit("mergekit could not be installed")
            yaml_check(exe, tmp)
            return
        base = load_base(tmp / "base")
        experts = [load_task_vector(f"e{i}", tmp / f"e{i}", base) for i in range(3)]
        dev = args.device
        where = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else f"{torch.get_num_threads()} threads"
        print(f"model: {n_params / 1e9:.3f}B params, 3 bf16 full experts; torch {torch.__version__}, {dev}: {where}")

        model_bytes = n_params * 4  # float32 model / task vectors
        src, dst = torch.empty(n_params, device=dev), torch.empty(n_params, device=dev)
        src.normal_()
        memcpy = median_time(functools.partial(dst.copy_, src), args.repeats, dev)
        memcpy_gbs = 2 * model_bytes / memcpy / 1e9
        del src, dst

        merger = Merger(base, experts, device=dev)
        target = {k: torch.empty(base.shape(k), dtype=torch.float32, device=dev) for k in merger.keys}
        t = time.perf_counter()
        for k in merger.keys:
            merger.stack(k)
        setup = time.perf_counter() - t
        ws = iter([(0.2, 0.3, 0.5), (0.5, 0.25, 0.25), (0.1, 0.8, 0.1), (0.3, 0.3, 0.4), (0.6, 0.2, 0.2)] * 10)
        # bytes a re-merge moves: the float32 base and K float32 task vectors read, the float32 model written
        touched = model_bytes + 3 * model_bytes + model_bytes
        linear = median_time(lambda: merger.write(target, MergeSpec("linear", next(ws))), args.repeats, dev)
        ties_params = get_method("ties").resolve({"density": 0.2})
        t = time.perf_counter()
        merger.write(target, MergeSpec("ties", (0.2, 0.3, 0.5), ties_params))  # trims computed once here
        if dev.startswith("cuda"):
            torch.cuda.synchronize()
        ties_first = time.perf_counter() - t
        ties = median_time(lambda: merger.write(target, MergeSpec("ties", next(ws), ties_params)), args.repeats, dev)

        # a checkpoint put into the model on its own, as the engine scores experts and true mixtures: a
        # merger with its own θ_0 reads and casts the base again; one sharing the engine's θ_0 does not
        one = MergeSpec("linear", (1.0,))

        def switch(shared: bool) -> None:
            for tv in experts:
                Merger(base, [tv], device=dev, theta0=merger.base if shared else None).write(target, one)

        switch_own = median_time(lambda: switch(False), max(1, args.repeats // 2), dev) / len(experts)
        switch_shared = median_time(lambda: switch(True), max(1, args.repeats // 2), dev) / len(experts)

        streamed = median_time(
            lambda: save_merged(base, experts, MergeSpec("linear", (0.2, 0.3, 0.5)), tmp / "out", overwrite=True),
            max(1, args.repeats // 2),
        )
        ties_spec = MergeSpec("ties", (0.2, 0.3, 0.5), ties_params)
        streamed_ties = median_time(lambda: save_merged(base, experts, ties_spec, tmp / "out", overwrite=True), 1)
        rows = [
            (
                "device copy (read + write)" if dev.startswith("cuda") else "memcpy (read + write)",
                memcpy,
                memcpy_gbs,
                1.0,
            ),
            ("in-memory linear re-merge", linear, touched / linear / 1e9, touched / linear / 1e9 / memcpy_gbs),
            ("in-memory TIES re-merge (trims reused)", ties, touched / ties / 1e9, touched / ties / 1e9 / memcpy_gbs),
        ]
        print(f"\n{'what':<42} {'median s':>9} {'GB/s':>7} {'× memcpy':>9}")
        for name, sec, gbs, ratio in rows:
            print(f"{name:<42} {sec:>9.3f} {gbs:>7.1f} {ratio:>9.2f}")
        print(f"\none-time: task vectors stacked in {setup:.2f} s; first TIES merge (with trims) {ties_first:.2f} s")
        print(
            f"checkpoint into the model: {switch_shared:.2f} s sharing θ_0, {switch_own:.2f} s with its own θ_0 "
            f"(= {switch_own / switch_shared:.2f}×)"
        )
        print(
            f"streamed disk→disk linear merge (save_merged): {streamed:.2f} s "
            f"= {streamed / linear:.0f}× an in-memory re-merge"
        )
        print(
            f"streamed disk→disk TIES merge (save_merged, density 0.2): {streamed_ties:.2f} s "
            f"= {streamed_ties / ties:.0f}× an in-memory TIES re-merge"
        )
        if args.mergekit:
            exe = shutil.which("mergekit-yaml") or install_mergekit()
            if exe is None:
                print("mergekit: skipped (could not install it)")
            else:
                mk = time_mergekit(exe, tmp, "linear", max(1, args.repeats // 2))
                print(f"mergekit-yaml linear, whole process: {mk:.2f} s = {mk / linear:.0f}× an in-memory re-merge")
                mk_ties = time_mergekit(exe, tmp, "ties", 1)
                print(
                    f"mergekit-yaml TIES (density 0.2), whole process: {mk_ties:.2f} s = "
                    f"{mk_ties / ties:.0f}× an in-memory TIES re-merge"
                )
                yaml_check(exe, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def yaml_check(exe: str, tmp: Path) -> None:
    from mixlab.demo import LABS_DIR

    (tmp / "lab.toml").write_text(
        'name = "bench"\nbase = "base"\n' + "".join(f'[[experts]]\nname = "e{i}"\npath = "e{i}"\n' for i in range(3))
    )
    print("\nmergekit-yaml on mixlab's --mergekit-yaml configs, against mixlab's export (mixture 0.2/0.3/0.5):")
    ok = check_mergekit_yaml(exe, LABS_DIR / "demo-k3", tmp / "k3", "demo-k3") & check_mergekit_yaml(
        exe, tmp, tmp / "full", "full"
    )
    print("all within bf16 rounding" if ok else "SOME DIFFER (see above)")


if __name__ == "__main__":
    main()
