"""Proxy evaluation at real model shapes: seconds per mixture of mixlab's paths against what people run.

    python bench/eval_scale.py [--model qwen2-0.5b|qwen2-1.5b|llama-1b] [--prompts 16] [--prompt-tokens 8]
                               [--new-tokens 8] [--batched 4,16] [--materialize 2] [--device cpu|cuda]

A randomly initialised model of a real config (transformers' own config classes, built here: nothing is
downloaded) with its real vocabulary, saved with ``save_pretrained``; three rank-16 LoRA experts on every
linear layer of it (PEFT, ``init_lora_weights=False``: B is not zero), saved with PEFT's ``save_pretrained``;
a lab over them with two benchmarks of ``--prompts`` rows each: greedy generation of ``--new-tokens``
tokens (exact_match, every row generates all of them: no EOS in the vocabulary) and a loss benchmark
(lm_loss over a prompt and a completion of ``--new-tokens`` tokens). Per benchmark, seconds per mixture of:

- materialize: mixlab's engine merging each mixture into its resident model (``path="materialize"``);
- batched M: mixlab's batched-mixture path with M mixtures in one batch (M × prompts rows a pass; the loss
  benchmark at most ``--loss-rows`` rows a pass, its logits are rows × tokens × vocab floats);
- naive: the in-process loop people write — per mixture, the base loaded with transformers, the three
  adapters with PEFT, ``add_weighted_adapter(combination_type="cat")`` (exact), ``merge_and_unload``, then
  ``generate`` (or one forward for the loss);
- pipeline: per mixture a merge process (``python -m mixlab merge``, which writes a model folder as mergekit
  does) and an evaluation process that loads the folder with transformers and runs ``generate`` — as the
  seed paper's mergekit + eval-harness loop;
- auto: what a sweep does by itself (``--auto`` mixtures, ``python -m mixlab sweep``'s defaults): the
  engine's own path (its cost rule) and its own rows a pass (``Engine.batch_size_for``: from free memory);
  the other mixlab rows fix the rows a pass;
- floor: plain ``transformers`` ``generate`` (or the loss forward) on one model already in memory (the
  base: a merged model costs the same): the evaluation alone, nothing merged or loaded.

Each path's cost per mixture is flat, so each is timed on few mixtures (``--materialize``, one naive, one
pipeline; the batched path on M). Prints the table and each path's ratio to the floor; nothing asserts a time.
Defaults fit a 2-core CPU in minutes; the paper's sizes: ``--prompts 64`` to ``200``, ``--new-tokens 16``
to ``32``, ``--model qwen2-1.5b``, ``--batched 4,16,64``, ``--device cuda``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from mixlab.engine import Engine  # noqa: E402
from mixlab.lab import load_lab  # noqa: E402
from mixlab.scoring.proxy import choose_path  # noqa: E402
from mixlab.simplex import Mixture  # noqa: E402
from mixlab.store import Store  # noqa: E402

# The published configs' shapes (Qwen2-0.5B, Qwen2-1.5B, Llama-3.2-1B): built here with transformers' classes
MODELS = {
    "qwen2-0.5b": dict(
        kind="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
    ),
    "qwen2-1.5b": dict(
        kind="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
        num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
    ),
    "llama-1b": dict(
        kind="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, head_dim=64,
    ),
    "tiny": dict(  # for a check of the script itself
        kind="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=1000, tie_word_embeddings=True,
    ),
}  # fmt: skip
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
EXPERTS = ("a", "b", "c")
DEVICE = torch.device("cpu")


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def clock() -> float:
    sync()
    return time.perf_counter()


def build_tokenizer(vocab_size: int):
    """A byte-level BPE tokenizer over the model's whole vocabulary, as Qwen2's and Llama 3's are: the 256
    byte tokens, then ``w<i>`` up to the vocabulary size (reachable only by generation: there are no merges,
    so a prompt of n letters is n tokens). A pad token and no EOS, so a random model's greedy generation
    always runs its full length. Loaded back with AutoTokenizer as the model class's own tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(byte_chars))}
    vocab |= {f"w{i}": i for i in range(len(vocab), vocab_size - 1)}
    tok = Tokenizer(models.BPE(vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<|pad|>", special=True)])  # id vocab_size - 1
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>")


def build_lab(root: Path, model: str, args) -> Path:
    """base/ (save_pretrained), experts/{a,b,c} (PEFT save_pretrained), data/, lab.toml."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = dict(MODELS[model])
    kind = shape.pop("kind")
    pad = shape["vocab_size"] - 1  # build_tokenizer's pad token
    config = AutoConfig.for_model(kind, **shape, bos_token_id=None, eos_token_id=None, pad_token_id=pad)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)  # the hub's dtype for these
    base.save_pretrained(root / "base")
    tok = build_tokenizer(config.vocab_size)
    tok.save_pretrained(root / "base")
    for i, name in enumerate(EXPERTS):
        torch.manual_seed(100 + i)
        cfg = LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, init_lora_weights=False)
        peft_model = get_peft_model(base, cfg)
        peft_model.save_pretrained(root / "experts" / name)
        base = peft_model.unload()
    rng = random.Random(0)
    (root / "data").mkdir()

    def words(n: int) -> str:  # n tokens: one per letter
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n))

    with open(root / "data" / "gen.jsonl", "w") as f:
        for _ in range(args.prompts):
            f.write(json.dumps({"prompt": words(args.prompt_tokens), "answer": words(args.new_tokens)}) + "\n")
    with open(root / "data" / "loss.jsonl", "w") as f:
        for _ in range(args.prompts):
            f.write(json.dumps({"prompt": words(args.prompt_tokens), "completion": words(args.new_tokens)}) + "\n")
    lines = [f'name = "scale-{model}"', 'base = "base"', ""]
    for name in EXPERTS:
        lines += ["[[experts]]", f'name = "{name}"', f'path = "experts/{name}"', ""]
    lines += ["[[benchmarks]]", 'name = "gen"', 'evaluator = "exact_match"', 'data = "data/gen.jsonl"']
    lines += [f"max_new_tokens = {args.new_tokens}", 'stop = ["</s>"]', ""]  # a string the vocabulary lacks
    lines += ["[[benchmarks]]", 'name = "loss"', 'evaluator = "lm_loss"', 'data = "data/loss.jsonl"', ""]
    (root / "lab.toml").write_text("\n".join(lines))
    return root


def mixtures(n: int, seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        w = [rng.random() + 0.05 for _ in EXPERTS]
        out.append([x / sum(w) for x in w])
    return out


def engine_seconds(lab, bench: str, ws: list[list[float]], path: str, rows: int | None, tmp: Path) -> float:
    """Seconds per mixture of mixlab's engine on one path, in its steady state: the model loaded and one
    mixture scored beforehand (the one-time work — the examples tokenised, the experts' factors stacked for
    the in-place merge — is paid once per engine, which the app and a sweep keep)."""
    eng = Engine(lab, Store(tmp / f"{bench}-{path}-{len(ws)}-{time.time_ns()}.sqlite"), str(DEVICE), rows)
    eng.sweep([Mixture.of(lab.expert_names, mixtures(1, 99)[0])], "linear", benchmarks=[bench], path=path)
    ms = [Mixture.of(lab.expert_names, w) for w in ws]
    t = clock()
    eng.sweep(ms, "linear", benchmarks=[bench], path=path)
    took = (clock() - t) / len(ws)
    del eng
    gc.collect()  # an engine's model is freed now, not when a collection happens to run (1.5B: 6 GB each)
    return took


def transformers_eval(model, tok, examples: list[dict], bench: str, new_tokens: int) -> None:
    """The evaluation as transformers runs it: ``generate`` (greedy, all prompts in one batch) or one
    forward with labels over prompt + completion."""
    if bench == "gen":
        tok.padding_side = "left"
        enc = tok([ex["prompt"] for ex in examples], return_tensors="pt", padding=True).to(DEVICE)
        model.generate(
            **enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
        )
    else:
        tok.padding_side = "right"
        enc = tok([ex["prompt"] + ex["completion"] for ex in examples], return_tensors="pt", padding=True)
        enc = enc.to(DEVICE)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        model(**enc, labels=labels)


def load_examples(lab_dir: Path, bench: str) -> list[dict]:
    return [json.loads(line) for line in (lab_dir / "data" / f"{bench}.jsonl").read_text().splitlines()]


def naive_seconds(lab_dir: Path, bench: str, w: list[float], args) -> float:
    """One mixture of the in-process loop: load the base and the adapters, merge_and_unload, evaluate."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    examples = load_examples(lab_dir, bench)
    t = clock()
    base = AutoModelForCausalLM.from_pretrained(lab_dir / "base", torch_dtype=DTYPE).to(DEVICE).eval()
    tok = AutoTokenizer.from_pretrained(lab_dir / "base")
    model = PeftModel.from_pretrained(base, lab_dir / "experts" / EXPERTS[0], adapter_name=EXPERTS[0])
    for name in EXPERTS[1:]:
        model.load_adapter(lab_dir / "experts" / name, adapter_name=name)
    model.add_weighted_adapter(list(EXPERTS), w, "mix", combination_type="cat")
    model.set_adapter("mix")
    merged = model.merge_and_unload()
    with torch.no_grad():
        transformers_eval(merged, tok, examples, bench, args.new_tokens)
    took = clock() - t
    del base, model, merged
    gc.collect()
    return took


def pipeline_seconds(lab_dir: Path, bench: str, w: list[float], args, tmp: Path) -> float:
    """One mixture of the two-process pipeline: a merge process writes a folder, an eval process loads it."""
    out = tmp / f"pipeline-{bench}-{time.time_ns()}"
    t = time.perf_counter()
    merge = [sys.executable, "-m", "mixlab", "merge", str(lab_dir), "--weights", ",".join(map(str, w))]
    subprocess.run([*merge, "--out", str(out)], check=True, capture_output=True, cwd=ROOT)
    evaluate = [sys.executable, __file__, "--eval-folder", str(out), "--lab-dir", str(lab_dir), "--bench", bench]
    evaluate += ["--new-tokens", str(args.new_tokens), "--device", str(DEVICE)]
    subprocess.run(evaluate, check=True, capture_output=True)
    seconds = time.perf_counter() - t
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def eval_folder(args) -> None:
    """The pipeline's evaluation process: a saved model folder, loaded and evaluated with transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(args.eval_folder, torch_dtype=DTYPE).to(DEVICE).eval()
    tok = AutoTokenizer.from_pretrained(args.eval_folder)
    with torch.no_grad():
        transformers_eval(model, tok, load_examples(Path(args.lab_dir), args.bench), args.bench, args.new_tokens)


def floor_seconds(eng: Engine, lab_dir: Path, bench: str, args, repeats: int = 2) -> float:
    """Plain transformers on one merged model in memory: the evaluation alone (best of ``repeats``)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(lab_dir / "base")
    examples = load_examples(lab_dir, bench)
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            t = clock()
            transformers_eval(eng.model, tok, examples, bench, args.new_tokens)
            best = min(best, clock() - t)
    return best


DTYPE = torch.float32  # set in main(): what mixlab's engine runs in on the device (evaluate.default_dtype)


def main() -> None:
    global DEVICE, DTYPE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2-0.5b", choices=sorted(MODELS))
    ap.add_argument("--prompts", type=int, default=16, help="rows per benchmark")
    ap.add_argument("--prompt-tokens", type=int, default=8, help="tokens per prompt")
    ap.add_argument("--new-tokens", type=int, default=8, help="tokens generated (and completion tokens of the loss)")
    ap.add_argument("--batched", default="4,16", help="mixtures per batch on the batched path, comma-separated")
    ap.add_argument("--materialize", type=int, default=2, help="mixtures timed on the materialised path")
    ap.add_argument("--loss-rows", type=int, default=64, help="rows per pass at most on the loss benchmark")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--benchmarks", default="loss,gen", help="which of loss, gen to time, comma-separated")
    ap.add_argument(
        "--paths", default="materialize,naive,pipeline,batched,auto", help="which paths to time besides the floor"
    )
    ap.add_argument("--auto", type=int, default=16, help="mixtures of the engine's own choices (path 'auto')")
    ap.add_argument("--floor-repeats", type=int, default=2, help="the floor is the best of this many runs")
    ap.add_argument("--keep", help="build the lab in this folder and keep it (reused when it holds one)")
    ap.add_argument("--eval-folder", help=argparse.SUPPRESS)  # internal: the pipeline's evaluation process
    ap.add_argument("--lab-dir", help=argparse.SUPPRESS)
    ap.add_argument("--bench", help=argparse.SUPPRESS)
    args = ap.parse_args()
    DEVICE = torch.device(args.device)
    from mixlab.evaluate import default_dtype, quiet_transformers

    DTYPE = default_dtype(DEVICE)
    quiet_transformers()
    if args.eval_folder:
        return eval_folder(args)
    tmp = Path(tempfile.mkdtemp(prefix="mixlab-scale-"))
    try:
        lab_dir = Path(args.keep) if args.keep else tmp / "lab"
        t = time.perf_counter()
        if not (lab_dir / "lab.toml").is_file():
            lab_dir.mkdir(parents=True, exist_ok=True)
            build_lab(lab_dir, args.model, args)
        built = time.perf_counter() - t
        lab = load_lab(lab_dir)
        probe = Engine(lab, Store(tmp / "probe.sqlite"), str(DEVICE), args.prompts)
        n_params = sum(p.numel() for p in probe.model.parameters())
        lora = sum(e.n_params for e in probe.experts) // len(EXPERTS)
        where = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else f"{torch.get_num_threads()} threads"
        print(
            f"{args.model}: {n_params / 1e6:.0f}M parameters ({DTYPE}), 3 LoRA experts r=16 on {len(TARGETS)} "
            f"linear kinds ({lora / 1e6:.1f}M each); {args.prompts} prompts × {args.prompt_tokens} tokens, "
            f"{args.new_tokens} new tokens; torch {torch.__version__}, {DEVICE}: {where}; lab built in {built:.0f} s"
        )
        batched = [int(m) for m in args.batched.split(",") if m]
        header = f"{'benchmark':<6} {'path':<28} {'rows/pass':>9} {'s/mixture':>10} {'× floor':>8}"
        print(f"\n{header}\n{'-' * len(header)}", flush=True)
        for bench in [b for b in ("loss", "gen") if b in args.benchmarks.split(",")]:  # cheaper first
            floor = floor_seconds(probe, lab_dir, bench, args, args.floor_repeats)
            paths = args.paths.split(",")

            def row(name: str, per_pass: int, s: float, _bench=bench, _floor=floor) -> None:
                print(f"{_bench:<6} {name:<28} {per_pass:>9} {s:>10.2f} {s / _floor:>8.2f}", flush=True)

            row("floor: transformers alone", args.prompts, floor)
            if "materialize" in paths:
                ws = mixtures(args.materialize, 1)
                row(
                    "mixlab materialize", args.prompts, engine_seconds(lab, bench, ws, "materialize", args.prompts, tmp)
                )
            w = mixtures(1, 2)[0]
            if "naive" in paths:
                naive = "naive: PEFT merge+generate" if bench == "gen" else "naive: PEFT merge+forward"
                row(naive, args.prompts, naive_seconds(lab_dir, bench, w, args))
            if "pipeline" in paths:
                row("pipeline: 2 processes", args.prompts, pipeline_seconds(lab_dir, bench, w, args, tmp))
            for m in batched if "batched" in paths else []:
                per_pass = (
                    m * args.prompts if bench == "gen" else min(m * args.prompts, max(args.loss_rows, args.prompts))
                )
                row(
                    f"mixlab batched M={m}",
                    per_pass,
                    engine_seconds(lab, bench, mixtures(m, 10 + m), "batched", per_pass, tmp),
                )
            if "auto" in paths:
                own = Engine(lab, Store(tmp / f"own-{bench}.sqlite"), str(DEVICE))
                spec = lab.benchmark(bench)
                sized = getattr(own, "batch_size_for", None)  # (a tree before it: one size for every benchmark)
                rows = sized(spec, own._bench(spec)) if sized else own.batch_size
                chosen = choose_path(own, own.method("linear"), spec, args.auto)
                del own, sized  # (the bound method holds the engine too)
                gc.collect()
                row(
                    f"mixlab auto: {chosen}, M={args.auto}",
                    rows,
                    engine_seconds(lab, bench, mixtures(args.auto, 5), "auto", None, tmp),
                )
            print(flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
