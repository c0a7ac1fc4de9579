"""Build the demo lab: ``python -m mixlab demo build [--out DIR] [--domains 3|4] [--quick] [--full]``.

1. A character tokenizer and a tiny Llama (2 layers, d=64) pretrained from scratch on every domain plus
   general data until it is partly able in each domain (exact match ≥ ``base_target`` on held-out dev
   examples, checked every ``base_check`` steps): the *base* knows every task a little.
2. One expert per domain, fine-tuned (LoRA r=8 on every linear layer, or ``--full``) on that domain
   alone for a budget of B = steps × batch examples.
3. One model per mixture point, fine-tuned the same way with the same budget on examples whose domain
   is drawn by the mixture's weights: the *true* mixture models.
4. A ``lab.toml`` like any user's, then every benchmark on the base, experts, true mixtures and the
   linear-merge proxies (true-mixture points and the step-0.1 grid), exported to evaluations.jsonl.
Everything is seeded; the K=3 build takes minutes on 2 CPU cores.
"""

from __future__ import annotations

import functools
import json
import random
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mixlab import staging
from mixlab.demo import LABS_DIR
from mixlab.demo.tasks import DOMAINS, GENERAL, GENERAL_TASK, build_tokenizer, examples
from mixlab.errors import MixlabError
from mixlab.evaluate import quiet_transformers
from mixlab.lab import BenchmarkSpec, load_lab, weights_label
from mixlab.manifest_writer import ManifestWriter
from mixlab.scoring import checkpoints
from mixlab.simplex import Mixture, dirichlet, grid_from_step, lattice
from mixlab.store import Store


@dataclass(frozen=True)
class Budget:
    """The training recipe. The default (:data:`FULL`, the shipped labs') pretrains the base on every domain
    plus general data (``pretrain_share`` of the examples), then fine-tunes short runs from it, so experts
    stay close to the base — the regime where merged proxies rank mixtures (bench/proxy_study.py).
    ``replay`` mixes that share of general data into every expert and true-mixture run. The base trains until
    every task domain's exact match on dev examples (not the benchmarks) reaches ``base_target``, checked
    every ``base_check`` steps, for at most ``base_steps`` (``base_target=0``: exactly ``base_steps``)."""

    base_steps: int = 2000  # at most
    base_target: float = 0.2  # "partly able": every task domain's dev exact match at least this
    base_check: int = 100
    steps: int = 60  # per expert and per true mixture: B = steps × batch examples
    batch: int = 32
    lr_base: float = 3e-3
    lr: float = 3e-3
    n_eval: int = 200  # held-out examples per benchmark
    lora_r: int = 8
    pretrain_share: float = 0.5  # general data in the base run (0: task domains only)
    replay: float = 0.0  # general data in each expert and true-mixture run

    def __post_init__(self) -> None:
        for name in ("base_steps", "base_check", "steps", "batch", "n_eval", "lora_r"):
            if getattr(self, name) < 1:
                raise MixlabError(f"demo budget: {name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("lr", "lr_base"):
            if not 0 < getattr(self, name) < 1:  # NaN fails too
                raise MixlabError(f"demo budget: {name} must be in (0, 1), got {getattr(self, name)}")
        for name in ("pretrain_share", "replay", "base_target"):
            if not 0 <= getattr(self, name) < 1:
                raise MixlabError(f"demo budget: {name} must be in [0, 1), got {getattr(self, name)}")


FULL = Budget()
# the recipe the labs were shipped with before: a short base on the task domains alone, long expert runs
SCRATCH = Budget(base_steps=120, base_target=0.0, steps=250, pretrain_share=0.0)
QUICK = Budget(base_steps=40, base_target=0.0, steps=30, batch=16, n_eval=24, pretrain_share=0.0)
DEV_EXAMPLES = 100  # per domain, for the base's stop rule; drawn apart from the benchmarks' examples
POOL_MERGES, POOL_ALPHA = 60, 0.3  # demo-recycle's cached merges of its pool: Dirichlet(0.3) draws, seed 0
# replicate r ≥ 2 of training run j (experts first, then the true mixtures in lab.toml's order) is seeded
# seed + 1 + j + REPLICATE_SEED × (r − 1): its LoRA init and its batches differ from replicate 1's
REPLICATE_SEED = 1000


def mixture_points(k: int, quick: bool, seed: int) -> np.ndarray:
    """K=3: the whole 1/8 lattice (45 points: the seed paper's 21 interior points plus vertices and
    edges) and the uniform mixture. K=4: 20 seeded Dirichlet(1) draws plus uniform (as the paper)."""
    uniform = np.full((1, k), 1.0 / k)
    if quick:
        return np.concatenate([np.eye(k)[:1], uniform, lattice(k, 2)[1:2]])
    if k == 3:
        return np.concatenate([lattice(3, 8), uniform])
    return np.concatenate([dirichlet(k, 20, 1.0, seed), uniform])


REPLICATE_SUBSETS = {
    "all": "every true mixture",
    "interior+vertices": "the interior points and the vertices",  # interior: every weight > 0; vertex: one expert
}


def gets_replicates(weights, subset: str) -> bool:
    """Whether a true mixture (its weights) gets replicates under ``subset`` (:data:`REPLICATE_SUBSETS`)."""
    if subset not in REPLICATE_SUBSETS:
        raise MixlabError(f"unknown replicate subset {subset!r}; available: {', '.join(REPLICATE_SUBSETS)}")
    w = np.asarray(weights, dtype=float)
    return subset == "all" or bool((w > 1e-9).all()) or int((w > 1e-9).sum()) == 1


def seeds_text(replicates: int, subset: str) -> str:
    """How a lab's description says its replicates: "" for one seed."""
    if replicates == 1:
        return ""
    return f" ({replicates} seeds each{'' if subset == 'all' else ' at ' + REPLICATE_SUBSETS[subset]})"


# Budget fields that `demo build` sets by a flag, and the flag
BUDGET_FLAGS = {
    "base_steps": "--base-steps",
    "base_target": "--base-target",
    "pretrain_share": "--pretrain-share",
    "replay": "--replay",
    "steps": "--expert-steps",
    "lr": "--lr",
    "n_eval": "--n-eval",
}


def build_command(domains: int, budget: Budget, quick: bool, full: bool, replicates: int, subset: str) -> str:
    """The `demo build` command that builds this recipe (what a lab's description names)."""
    default = QUICK if quick else FULL
    flags = [f"--domains {domains}"] + ["--quick"] * quick + ["--full"] * full
    if not quick and budget == SCRATCH:
        flags.append("--scratch")
    else:
        flags += [
            f"{BUDGET_FLAGS[f]} {getattr(budget, f):g}"
            for f in BUDGET_FLAGS
            if getattr(budget, f) != getattr(default, f)
        ]
    if replicates > 1:
        flags.append(f"--replicates {replicates}" + ("" if subset == "all" else f" --replicate-subset {subset}"))
    return "python -m mixlab demo build " + " ".join(flags)


def replicate_path(label: str, r: int) -> str:
    """Where a demo build writes replicate ``r`` (from 1) of the true mixture ``label``: replicate 1 where a
    single-seed build puts it (so its checkpoint, and every cached score of it, stays as it was)."""
    return f"true/{label}" if r == 1 else f"true/{label}-r{r}"


def replicate_seed(seed: int, run: int, r: int) -> int:
    """The seed of replicate ``r`` of training run ``run`` (see :data:`REPLICATE_SEED`)."""
    return seed + 1 + run + REPLICATE_SEED * (r - 1)


def training_runs(
    names: list[str], points: np.ndarray, replicates: int = 1, subset: str = "all"
) -> tuple[list[tuple], list[dict]]:
    """What a demo build trains: one run per expert (a vertex) and ``replicates`` per true mixture of
    ``subset`` (:data:`REPLICATE_SUBSETS`; one for the others), as (folder, weights, description, seed
    offset: :func:`replicate_seed` of seed 0); and the true mixtures' manifest entries (``paths = [...]``
    for those with replicates). Replicate 1 of every run comes first, in the order single-seed builds train
    them, so adding replicates never changes a run that was already trained."""
    if replicates < 1:
        raise MixlabError(f"demo build: replicates must be ≥ 1, got {replicates}")
    runs = [(f"experts/{n}", np.eye(len(names))[i], f"expert {n}", 1 + i) for i, n in enumerate(names)]
    trues, labels = [], []
    for w in points:
        label = weights_label(dict(zip(names, map(float, w))), names)
        runs.append((replicate_path(label, 1), w, f"true {label}", len(runs) + 1))
        labels.append((label, w, len(runs) - 1))
        n = replicates if gets_replicates(w, subset) else 1
        paths = [replicate_path(label, r) for r in range(1, n + 1)]
        where = {"path": paths[0]} if n == 1 else {"paths": paths}
        trues.append({"name": label, "weights": {n: float(x) for n, x in zip(names, w) if x > 0}} | where)
    for r in range(2, replicates + 1):  # seed by seed, as demo replicates trains them
        for label, w, j in labels:
            if not gets_replicates(w, subset):
                continue
            runs.append((replicate_path(label, r), w, f"true {label} (replicate {r})", replicate_seed(0, j, r)))
    return runs, trues


def model_config(tokenizer, hidden: int = 64, intermediate: int = 176, layers: int = 2, heads: int = 4):
    """The demo's tiny Llama (the tests build a smaller one with the same function)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


class _Stream:
    """Training batches: each example's domain drawn by the mixture weights, seeded per run; a ``general``
    share of the examples comes from the general corpus instead."""

    def __init__(
        self, tokenizer, names: list[str], weights: np.ndarray, seed: int, prompt_loss: bool, general: float = 0.0
    ):
        w = np.asarray(weights, dtype=np.float64)
        self.tok, self.names = tokenizer, [*names, GENERAL]
        self.w = np.append(w / w.sum() * (1 - general), general)
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.prompt_loss = prompt_loss

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        domains = self.np_rng.choice(len(self.names), size=size, p=self.w / self.w.sum())
        seqs, labels = [], []
        for d in domains:
            name = self.names[d]
            prompt, answer = (GENERAL_TASK if name == GENERAL else DOMAINS[name])(self.rng)
            p = self.tok(prompt)["input_ids"]  # the tokenizer's own convention: BOS first
            a = self.tok(answer + "\n", add_special_tokens=False)["input_ids"]
            seqs.append(p + a)
            labels.append((p if self.prompt_loss else [-100] * len(p)) + a)
        width = max(map(len, seqs))
        ids = torch.full((size, width), self.tok.pad_token_id)
        lab = torch.full((size, width), -100)
        mask = torch.zeros((size, width), dtype=torch.long)
        for i, (s, lab_i) in enumerate(zip(seqs, labels)):
            ids[i, : len(s)], lab[i, : len(lab_i)], mask[i, : len(s)] = torch.tensor(s), torch.tensor(lab_i), 1
        lab[:, 0] = -100
        return ids, mask, lab


def _train(
    model, stream: _Stream, steps: int, batch: int, lr: float, desc: str, show: bool, stop=None, every: int = 100
) -> int:
    """Train for ``steps`` steps, or until ``stop()`` (asked every ``every`` steps, in eval mode) says so;
    returns the steps taken."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * max(0.05, 1 - s / steps))
    model.train()
    for step in tqdm(range(1, steps + 1), desc=desc, leave=False, disable=not show):
        b = stream.batch(batch)  # the text demo's (ids, mask, labels), or the vision demo's processor output
        loss = (model(input_ids=b[0], attention_mask=b[1], labels=b[2]) if isinstance(b, tuple) else model(**b)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if stop is not None and step % every == 0 and step < steps:
            model.eval()
            if stop():
                return step
            model.train()
    model.eval()
    return steps


def dev_ability(model, tokenizer, names: list[str], seed: int, n: int = DEV_EXAMPLES) -> dict[str, float]:
    """Greedy exact match per domain on ``n`` dev examples (seeded apart from the benchmarks' examples)."""
    from mixlab.evaluate import run_benchmark

    out = {}
    for name in names:
        spec = BenchmarkSpec(name=name, evaluator="exact_match", data="(dev)", max_new_tokens=8)
        rows = [{"prompt": p, "answer": a} for p, a in examples(name, n, seed=20_000 + seed)]
        out[name] = run_benchmark(model, tokenizer, spec, rows, torch.device("cpu"), batch_size=n).score
    return out


def pretrain_base(tokenizer, names: list[str], budget: Budget, seed: int, show: bool):
    """The base: every domain plus ``pretrain_share`` general data, until partly able in each domain (see
    :class:`Budget`). Returns the model, the steps taken and its dev exact match per domain."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    base = LlamaForCausalLM(model_config(tokenizer))
    stream = _Stream(tokenizer, names, np.ones(len(names)), seed, prompt_loss=True, general=budget.pretrain_share)

    def able() -> bool:
        return budget.base_target > 0 and min(dev_ability(base, tokenizer, names, seed).values()) >= budget.base_target

    steps = _train(base, stream, budget.base_steps, budget.batch, budget.lr_base, "base", show, able, budget.base_check)
    return base, steps, dev_ability(base, tokenizer, names, seed)


def _lora_config(budget: Budget):
    """The LoRA of every demo run (experts, true mixtures, the recycling pool): rank ``budget.lora_r`` on every
    attention and MLP projection."""
    from peft import LoraConfig

    return LoraConfig(
        r=budget.lora_r,
        lora_alpha=2 * budget.lora_r,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )


def _finetune(base_dir: Path, out: Path, stream: _Stream, budget: Budget, full: bool, seed: int, desc: str, show: bool):
    from peft import get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM.from_pretrained(base_dir, local_files_only=True)
    if full:
        _train(model, stream, budget.steps, budget.batch, budget.lr / 3, desc, show)
        model.save_pretrained(out)
        (out / "generation_config.json").unlink(missing_ok=True)
        return
    model = get_peft_model(model, _lora_config(budget))
    _train(model, stream, budget.steps, budget.batch, budget.lr, desc, show)
    model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)


def _write_benchmarks(root: Path, names: list[str], n: int, seed: int) -> list[dict]:
    (root / "data").mkdir()
    benches = []
    for name in names:
        write_split(root, name, n, seed)
        data = {"data": f"data/{name}.jsonl", "search_data": f"data/{name}_dev.jsonl"}
        benches.append({"name": name, "evaluator": "exact_match", **data, "max_new_tokens": 8})
        benches.append({"name": f"{name}-loss", "evaluator": "lm_loss", **data})
    return benches


def write_split(root: Path, name: str, n: int, seed: int) -> None:
    """A domain's held-out examples: ``data/<name>.jsonl`` (test: what every score reports) and
    ``data/<name>_dev.jsonl`` (what ``search`` optimises on), each ``n`` examples, seeded apart from each
    other and from the training runs."""
    for path, offset in ((root / "data" / f"{name}.jsonl", 10_000), (root / "data" / f"{name}_dev.jsonl", 30_000)):
        with open(path, "w") as f:
            f.writelines(
                json.dumps({"prompt": prompt, "answer": answer, "completion": answer + "\n"}) + "\n"
                for prompt, answer in examples(name, n, seed=offset + seed)
            )


def write_manifest(
    root: Path,
    name: str,
    description: str,
    names: list[str],
    benches: list[dict],
    trues: list[dict],
    merge: dict | None = None,
    merge_comment: str | None = None,
) -> Path:
    """A demo lab's ``lab.toml`` (one writer for the text, recycling and vision labs): base, experts, the
    benchmarks and true mixtures as rows of their tables, and an optional ``[merge]`` table."""
    doc = ManifestWriter()
    doc.set("name", name)
    doc.set("description", description)
    doc.set("base", "base")
    for n in names:
        doc.blank()
        doc.item("experts")
        doc.set("name", n)
        doc.set("path", f"experts/{n}")
    for table, rows in (("benchmarks", benches), ("true_mixtures", trues)):
        for row in rows:
            doc.blank()
            doc.item(table)
            for k, v in row.items():
                doc.set(k, v)
    if merge:
        doc.blank()
        doc.table("merge", merge_comment)
        for k, v in merge.items():
            doc.set(k, v)
    return doc.write(root)


# merge methods whose proxies the full labs also cache at the true-mixture points, so the dashboard and
# `report --method` compare methods side by side on real scores
COMPARE_METHODS = (
    ("task_arithmetic", {"scale": 1.5}),
    ("task_arithmetic", {"scale": 2.0}),
    ("ties", {"density": 0.5}),
    ("dare_linear", {"drop_rate": 0.5}),
)


def cache_method_comparison(engine, points, show: bool = True) -> None:
    """Proxies of :data:`COMPARE_METHODS` at ``points`` (the true mixtures), into the engine's store."""
    mixtures = [Mixture.of(engine.names, p) for p in points]
    for method, params in tqdm(COMPARE_METHODS, desc="other merge methods", disable=not show):
        engine.sweep(mixtures, method, params)


@contextmanager
def staged_lab(out: Path, overwrite: bool):
    """Build a lab in a temp folder beside ``out``; it replaces ``out`` only when complete (a failed or
    interrupted build leaves ``out`` as it was, and a killed build's temp folder is removed by the next one:
    :mod:`mixlab.staging`, as for merged exports)."""
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise MixlabError(f"{out} exists; pass --overwrite to rebuild it")
    try:
        root = staging.stage(out)
    except OSError as e:
        raise MixlabError(f"cannot write into {out.parent}: {e.strerror or e}") from None
    try:
        yield root
    except BaseException:
        staging.discard(root)
        raise
    try:
        staging.publish(root, out)  # the earlier lab is replaced only once the new one is whole
    except OSError as e:
        staging.discard(root)
        raise MixlabError(f"cannot move the built lab into place at {out}: {e.strerror or e}") from None


def write_build_info(root: Path, info: dict) -> None:
    """``build_info.json``: how a demo lab was built (seed, budget, time taken), with torch's version; and the
    lab's page summaries (``summaries.json``, :func:`mixlab.summary.ship`), so a fresh cache draws its pages
    without the model stack."""
    from mixlab.summary import ship

    (root / "build_info.json").write_text(json.dumps(info | {"torch": torch.__version__}, indent=2))
    ship(root)


def build_demo(
    out: Path | None = None,
    *,
    domains: int = 3,
    quick: bool = False,
    full: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    show_progress: bool = True,
    budget: Budget | None = None,
    points: np.ndarray | None = None,
    proxy_grid: bool = True,
    replicates: int = 1,
    replicate_subset: str = "all",
) -> Path:
    """Train and write a demo lab to ``out`` (default ``cache/demo-k{domains}``); returns its folder.

    ``budget``: the recipe (default: :data:`QUICK` or :data:`FULL`); ``points``: the true-mixture points
    (default: :func:`mixture_points`); ``proxy_grid``: also cache linear proxies on a grid beyond them;
    ``replicates``: seeds per true mixture (≥ 2: listed as ``paths``, for the noise ceiling), of the true
    mixtures in ``replicate_subset`` (:data:`REPLICATE_SUBSETS`)."""
    from mixlab.engine import EXPORT_FILE, Engine  # the engine pulls in the evaluation stack: only when building
    from mixlab.values import VALUES_FILE

    if domains not in (3, 4):
        raise MixlabError(f"the demo lab has 3 or 4 domains, got --domains {domains}")
    names = list(DOMAINS)[:domains]
    budget = budget or (QUICK if quick else FULL)
    out = Path(out) if out else LABS_DIR / f"demo-k{domains}{'-full' if full else ''}"
    quiet_transformers()
    start = time.perf_counter()
    with staged_lab(out, overwrite) as root:
        tokenizer = build_tokenizer()
        benches = _write_benchmarks(root, names, budget.n_eval, seed)

        base, base_steps, base_dev = pretrain_base(tokenizer, names, budget, seed, show_progress)
        base.save_pretrained(root / "base")
        tokenizer.save_pretrained(root / "base")

        kind = "full" if full else "lora"
        points = mixture_points(domains, quick, seed) if points is None else np.asarray(points, dtype=float)
        runs, trues = training_runs(names, points, replicates, replicate_subset)
        for rel, w, desc, offset in tqdm(runs, desc=f"fine-tuning {kind}", disable=not show_progress):
            stream = _Stream(tokenizer, names, w, seed + offset, prompt_loss=False, general=budget.replay)
            _finetune(root / "base", root / rel, stream, budget, full, seed + offset, desc, show_progress)

        description = (
            f"Built by `{build_command(domains, budget, quick, full, replicates, replicate_subset)}`: a base "
            f"pretrained {base_steps} steps (dev exact match {', '.join(f'{n} {v:.2f}' for n, v in base_dev.items())}), "
            f"{kind} experts, {len(points)} true mixtures{seeds_text(replicates, replicate_subset)}, budget "
            f"{budget.steps} steps × {budget.batch} examples each at learning rate {budget.lr:g}; {budget.n_eval} "
            "held-out examples per benchmark (and as many dev examples)."
        )
        write_manifest(root, f"demo-k{domains}{'-quick' if quick else ''}", description, names, benches, trues)

        lab = load_lab(root)
        store = Store(":memory:")  # the build's scores leave as the lab's evaluations.jsonl
        engine = Engine(lab, store, device="cpu")
        bar = tqdm(desc="evaluating", disable=not show_progress)
        checkpoints.base_scores(engine)
        checkpoints.expert_scores(engine)
        checkpoints.true_scores(engine)
        # proxies at every true-mixture point, plus a grid (step 0.1 for K=3: 66 points; 0.2 for K=4: 56)
        step = 0.1 if domains == 3 else 0.2
        grid = [
            Mixture.of(names, p)
            for p in (points if quick or not proxy_grid else np.concatenate([points, grid_from_step(domains, step)]))
        ]
        engine.sweep(grid, "linear", progress=lambda d, t, m: (setattr(bar, "total", t), bar.update(d - bar.n)))
        bar.close()
        compare_start = time.perf_counter()
        if not quick and proxy_grid:
            cache_method_comparison(engine, points, show_progress)
        compare_seconds = time.perf_counter() - compare_start
        store.export_jsonl(root / EXPORT_FILE)
        store.export_values(root / VALUES_FILE)
        store.close()
        write_build_info(
            root,
            {
                "seed": seed,
                "domains": names,
                "kind": kind,
                "quick": quick,
                "replicates": replicates,
                "replicate_seed": REPLICATE_SEED,
                "replicate_subset": replicate_subset,
                "budget": budget.__dict__,
                "base_steps_taken": base_steps,
                "base_dev_exact_match": {n: round(v, 3) for n, v in base_dev.items()},
                "seconds": round(time.perf_counter() - start, 1),
                "method_comparison_seconds": round(compare_seconds, 1),
            },
        )
    return out


def add_replicates(lab_dir: Path, replicates: int = 2, *, subset: str = "all", show_progress: bool = True) -> Path:
    """``demo replicates LAB``: train seeds 2 … ``replicates`` of every true mixture of a built demo lab —
    its recipe, seed and kind read from its ``build_info.json``, each run seeded as ``demo build
    --replicates`` seeds it (:func:`replicate_seed`), so a fresh build with replicates trains the same runs —
    list them in lab.toml as ``paths = [...]`` (replicate 1 the existing checkpoint, untouched), score them,
    and add their scores to the lab's evaluations export (every existing row stays as it was). The lab is
    rebuilt in a staged copy that replaces it only when whole. ``subset``: which true mixtures get
    replicates (:data:`REPLICATE_SUBSETS`; the others keep their one ``path``)."""
    from mixlab.engine import EXPORT_FILE, Engine
    from mixlab.values import VALUES_FILE

    lab_dir = Path(lab_dir)
    lab = load_lab(lab_dir)
    info_path = lab_dir / "build_info.json"
    if not info_path.is_file():
        raise MixlabError(f"{info_path}: no build_info.json; replicates are added to labs built by `demo build`")
    info = json.loads(info_path.read_text())
    if info.get("quick") is None or "budget" not in info or info.get("replicates", 1) != 1:
        raise MixlabError(f"{info_path}: not a single-seed `demo build` lab (needs seed, budget, replicates 1)")
    if not set(info.get("domains", ())) <= set(DOMAINS):
        raise MixlabError(
            f"{info_path}: domains {info.get('domains')} are not the text demo's ({', '.join(DOMAINS)}); "
            "`demo replicates` trains the text labs' runs (a vision-language lab is rebuilt with `demo build "
            "--multimodal`)"
        )
    if replicates < 2:
        raise MixlabError(f"demo replicates: --replicates must be ≥ 2, got {replicates}")
    trues = lab.manifest.true_mixtures
    if not trues or any(t.path is None for t in trues):
        raise MixlabError(f"{lab_dir / 'lab.toml'}: every true mixture must have one checkpoint (path = ...)")
    names, seed, full = lab.expert_names, int(info["seed"]), info.get("kind") == "full"
    budget = Budget(**info["budget"])
    quiet_transformers()
    start = time.perf_counter()
    with staged_lab(lab_dir, overwrite=True) as root:
        shutil.copytree(lab_dir, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("lab.toml", ".mixlab"))
        tokenizer = build_tokenizer()
        chosen = [gets_replicates(lab.true_mixture_weights(t).weights, subset) for t in trues]
        runs = [
            (replicate_path(lab.true_mixture_name(t), r), i, r)
            for r in range(2, replicates + 1)
            for i, t in enumerate(trues)
            if chosen[i]
        ]
        for rel, i, r in tqdm(runs, desc="fine-tuning replicates", disable=not show_progress):
            if trues[i].path != replicate_path(lab.true_mixture_name(trues[i]), 1):
                raise MixlabError(
                    f"true mixture {trues[i].name!r}: path {trues[i].path!r} is not where demo build puts it"
                )
            w = np.array(lab.true_mixture_weights(trues[i]).weights)
            run_seed = replicate_seed(seed, len(names) + i, r)  # experts are runs 0 … K−1
            stream = _Stream(tokenizer, names, w, run_seed, prompt_loss=False, general=budget.replay)
            _finetune(root / "base", root / rel, stream, budget, full, run_seed, rel, show_progress)
        rows = [
            {"name": t.name, "weights": t.weights}
            | (
                {"paths": [replicate_path(lab.true_mixture_name(t), r) for r in range(1, replicates + 1)]}
                if chosen[i]
                else {"path": t.path}
            )
            for i, t in enumerate(trues)
        ]
        benches = [b.model_dump(exclude_none=True, exclude_defaults=True) | {"name": b.name} for b in lab.benchmarks]
        order = ("name", "evaluator", "data", "search_data")  # as demo build writes them
        benches = [{k: b[k] for k in order if k in b} | {k: v for k, v in b.items() if k not in order} for b in benches]
        which = (
            "Every true mixture"
            if subset == "all"
            else f"The {sum(chosen)} true mixtures at {REPLICATE_SUBSETS[subset]}"
        )
        description = lab.manifest.description + f" {which} trained with {replicates} seeds (replicates)."
        write_manifest(root, lab.name, description, names, benches, rows)
        store = Store(":memory:", seed_from=root / EXPORT_FILE)
        store.sync_export(root / VALUES_FILE, values=True)  # the shipped per-example values, kept
        engine = Engine(load_lab(root), store, device="cpu")
        checkpoints.true_scores(engine)  # replicate 1's scores are cache hits: its checkpoint is unchanged
        store.export_jsonl(root / EXPORT_FILE)
        store.export_values(root / VALUES_FILE)  # and the new scores' values beside them
        store.close()
        info |= {"replicates": replicates, "replicate_seed": REPLICATE_SEED, "replicate_subset": subset}
        info["replicates_seconds"] = round(time.perf_counter() - start, 1)
        write_build_info(root, info)
    return lab_dir


@dataclass(frozen=True)
class PoolRun:
    """One training run of the recycling pool: a LoRA run from the demo base (``parent`` None: stage 1) or the
    continuation of ``parent``'s adapter (stage 2: the same LoRA matrices trained further, a fresh optimizer),
    on examples drawn by ``weights`` (add, rev, sort), for ``steps`` steps at learning rate ``lr``; ``half``:
    also keep its checkpoint at the halfway step (``<name>-half``)."""

    name: str
    parent: str | None
    weights: tuple[float, ...]
    lr: float
    steps: int
    half: bool = False


# demo-recycle's pool, fixed before any of it was trained or scored (as the recycling paper's pools: checkpoints
# of runs that share training and then differ in mixture, learning rate and length): a stage-1 generalist on the
# uniform mixture, and stage-2 continuations from it that lean to one domain (mild: 0.6, or only it), mix two,
# or train the uniform mixture longer at a lower rate; the halfway checkpoints of four of them. 14 checkpoints.
POOL_RECIPE = (
    PoolRun("generalist", None, (1, 1, 1), 3e-3, 60, half=True),
    PoolRun("add-lean", "generalist", (0.6, 0.2, 0.2), 1e-3, 40),
    PoolRun("rev-lean", "generalist", (0.2, 0.6, 0.2), 1e-3, 40),
    PoolRun("sort-lean", "generalist", (0.2, 0.2, 0.6), 1e-3, 40),
    PoolRun("add-only", "generalist", (1, 0, 0), 3e-3, 40, half=True),
    PoolRun("rev-only", "generalist", (0, 1, 0), 3e-3, 40, half=True),
    PoolRun("sort-only", "generalist", (0, 0, 1), 3e-3, 40, half=True),
    PoolRun("add-rev", "generalist", (0.5, 0.5, 0), 3e-3, 20),
    PoolRun("uniform-long", "generalist", (1, 1, 1), 1e-3, 80, half=True),
)
POOL_SEED = 500  # pool run i is seeded seed + POOL_SEED + i: apart from the source lab's runs
POOL_SEARCH = {"sampler": "cmaes", "space": "sparse", "start": True}  # the recorded search; trials: 10 × pool
POOL_SEARCH_SEEDS = (0, 1, 2)  # seed 0 is recycle.json's searched row; every seed's row is in build_info.json


def pool_names(recipe=POOL_RECIPE) -> list[str]:
    """The pool's checkpoints in the order the recipe trains them (a run's halfway checkpoint before it)."""
    return [n for r in recipe for n in ([f"{r.name}-half"] if r.half else []) + [r.name]]


def train_pool(base_dir: Path, experts_dir: Path, tokenizer, names: list[str], budget: Budget, seed: int,
               recipe=POOL_RECIPE, show: bool = True) -> None:  # fmt: skip
    """Train :data:`POOL_RECIPE` from the base in ``base_dir``, saving each checkpoint as a PEFT adapter folder
    ``experts_dir/<name>`` (``save_pretrained``, as the demo's experts)."""
    from peft import PeftModel, get_peft_model
    from transformers import LlamaForCausalLM

    for i, run in enumerate(tqdm(recipe, desc="training the pool", disable=not show)):
        run_seed = seed + POOL_SEED + i
        torch.manual_seed(run_seed)
        model = LlamaForCausalLM.from_pretrained(base_dir, local_files_only=True)
        if run.parent is None:
            model = get_peft_model(model, _lora_config(budget))
        else:
            model = PeftModel.from_pretrained(model, experts_dir / run.parent, is_trainable=True)
        stream = _Stream(tokenizer, names, np.array(run.weights, dtype=float), run_seed, prompt_loss=False)

        half = functools.partial(_save_adapter, model, experts_dir / f"{run.name}-half") if run.half else None
        _train(model, stream, run.steps, budget.batch, run.lr, run.name, show, half, run.steps // 2)
        _save_adapter(model, experts_dir / run.name)


def _save_adapter(model, folder: Path) -> bool:
    """Save a PEFT model's adapter (``save_pretrained``, without its generated README); False: as a
    :func:`_train` ``stop``, keep training."""
    model.save_pretrained(folder)
    (folder / "README.md").unlink(missing_ok=True)
    return False


def median_pairwise_cosine(engine) -> float:
    """The median over pairs of the experts' task-vector cosines (the Experts page's heatmap, off its
    diagonal)."""
    from mixlab.diagnostics import interference

    cos = interference(engine.experts)["cosine"].to_numpy()
    return float(np.median(cos[np.triu_indices(len(cos), 1)]))


def build_recycle(
    source: Path | None = None,
    out: Path | None = None,
    *,
    trials: int | None = None,
    seeds: tuple[int, ...] = POOL_SEARCH_SEEDS,
    recipe=POOL_RECIPE,
    overwrite: bool = False,
    show_progress: bool = True,
) -> Path:
    """``demo build --recycle``: a lab whose experts are a pool of checkpoints of one base, trained as
    :data:`POOL_RECIPE` from the source demo lab's base (its data, tokenizer and budget's batch and LoRA rank;
    none of its own runs) — a stage-1 generalist, stage-2 continuations and halfway checkpoints — with every
    checkpoint scored; the recycling candidates of :func:`mixlab.recycle.recycle` (objective: the mean;
    :data:`POOL_SEARCH`: CMA-ES in the sparse box from the greedy soup, ``trials`` default 10 × the pool) for
    each of ``seeds``, the first's table in ``recycle.json`` and every seed's searched row in
    ``build_info.json``; and :data:`POOL_MERGES` linear merges of the pool (seeded
    Dirichlet(:data:`POOL_ALPHA`) draws, most weight on a few checkpoints) scored on the higher-is-better
    benchmarks, so the Pareto page has merges to draw a front of against every checkpoint."""
    from mixlab.engine import EXPORT_FILE, Engine
    from mixlab.recycle import RECORD, recycle
    from mixlab.values import VALUES_FILE

    src = load_lab(source or LABS_DIR / "demo-k3")
    out = Path(out) if out else LABS_DIR / "demo-recycle"
    info_path = src.root / "build_info.json"
    if not info_path.is_file():
        raise MixlabError(f"{info_path}: no build_info.json; the pool is trained from a lab built by `demo build`")
    src_info = json.loads(info_path.read_text())
    budget, seed, domains = Budget(**src_info["budget"]), int(src_info["seed"]), src.expert_names
    if len(domains) != len(recipe[0].weights):
        raise MixlabError(f"the pool's recipe mixes {len(recipe[0].weights)} domains; lab {src.name!r} has {domains}")
    names = pool_names(recipe)
    trials = trials or 10 * len(names)
    quiet_transformers()
    start = time.perf_counter()
    with staged_lab(out, overwrite) as root:
        shutil.copytree(src.resolve(src.manifest.base), root / "base")
        shutil.copytree(src.root / "data", root / "data")
        train_pool(root / "base", root / "experts", build_tokenizer(), domains, budget, seed, recipe, show_progress)
        train_seconds = time.perf_counter() - start
        benches = [b.model_dump(exclude_none=True, exclude_defaults=True) | {"name": b.name} for b in src.benchmarks]
        description = (
            f"Built by `python -m mixlab demo build --recycle` from {src.name}'s base: a pool of {len(names)} "
            "checkpoints of one LoRA generalist (trained on the uniform mixture) and its continuations, which differ "
            "in mixture, learning rate and length, with halfway checkpoints; for recycling."
        )
        write_manifest(root, "demo-recycle", description, names, benches, [])
        lab = load_lab(root)
        store = Store(":memory:")
        engine = Engine(lab, store, device="cpu")
        checkpoints.checkpoint_scores(engine)
        searched, table = [], None
        for s in seeds:
            bar = tqdm(desc=f"searching merge weights (seed {s})", total=trials, disable=not show_progress)
            rows = recycle(
                engine,
                "mean",
                trials=trials,
                seed=s,
                progress=lambda d, t, m, bar=bar: bar.update(d - bar.n),
                **POOL_SEARCH,
            )
            bar.close()
            table = table or rows
            row = rows[-1]
            searched.append(
                {k: row[k] for k in ("weights", "dev_objective", "test_objective", "vs_best_single")} | {"seed": s}
            )
        merges = [Mixture.of(names, list(w), normalize=True) for w in dirichlet(len(names), POOL_MERGES, POOL_ALPHA)]
        engine.sweep(merges, "linear", benchmarks=[b.name for b in lab.benchmarks if b.higher_is_better])
        (root / RECORD).write_text(json.dumps(table, indent=2) + "\n")
        store.export_jsonl(root / EXPORT_FILE)
        store.export_values(root / VALUES_FILE)
        store.close()
        info = {
            "source": src.name,
            "seed": seed,
            "pool": names,
            "recipe": [r.__dict__ for r in recipe],
            "median_pairwise_cosine": round(median_pairwise_cosine(engine), 4),
            "search": POOL_SEARCH | {"objective": "mean", "trials": trials},
            "searched_seeds": searched,
            "train_seconds": round(train_seconds, 1),
            "seconds": round(time.perf_counter() - start, 1),
        }
        write_build_info(root, info)
    return out
