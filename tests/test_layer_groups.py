"""Per-layer-group weights (mixlab.merge.groups): the partition by tensor names, the merge against a
hand-computed per-group weighted sum, the cache key, and a search that reaches a per-group optimum."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mixlab.checkpoint import load_base
from mixlab.engine import Engine
from mixlab.errors import EvaluationError, MergeError, MixlabError
from mixlab.experts import load_task_vector
from mixlab.keys import CacheKey
from mixlab.lab import load_lab
from mixlab.merge import Merger, MergeSpec, get_method, iter_merged
from mixlab.merge.groups import group_index, layer_groups
from mixlab.scoring.proxy import score as proxy_scores
from mixlab.simplex import Mixture
from mixlab.store import Store

LLAMA = [
    "model.embed_tokens.weight",
    *[f"model.layers.{i}.{m}.weight" for i in range(4) for m in ("self_attn.q_proj", "mlp.down_proj")],
    "model.norm.weight",
    "lm_head.weight",
]
LLAVA = [
    "model.vision_tower.vision_model.embeddings.patch_embedding.weight",
    "model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight",
    "model.vision_tower.vision_model.encoder.layers.5.mlp.fc1.weight",
    "model.multi_modal_projector.linear_1.weight",
    "model.language_model.embed_tokens.weight",
    *[f"model.language_model.layers.{i}.self_attn.q_proj.weight" for i in range(2)],
    "model.language_model.norm.weight",
    "lm_head.weight",
]
GPT2 = ["transformer.wte.weight", "transformer.h.0.attn.c_attn.weight", "transformer.h.1.mlp.c_fc.weight"]
GPT2 += ["transformer.ln_f.weight"]


def test_layer_groups_split_the_depth_levels_of_llama_qwen2_gpt2_and_llava_names():
    # Llama/Qwen2 names: input (embeddings), blocks 0..3, output (norm, head): 6 levels in 3 runs of 2
    groups = layer_groups(LLAMA, 3)
    assert [n for n, _ in groups] == ["input – block 0", "blocks 1 – 2", "block 3 – output"]
    assert groups[0][1] == LLAMA[:3] and groups[2][1] == LLAMA[7:]
    assert [n for n, _ in layer_groups(LLAMA, 6)] == ["input", "block 0", "block 1", "block 2", "block 3", "output"]
    # LLaVA: the vision tower (its own block numbers too) and the projector feed the first block: input side
    index = group_index(LLAVA, 4)
    assert {index[k] for k in LLAVA[:5]} == {0} and index[LLAVA[5]] == 1 and index[LLAVA[6]] == 2
    assert {index[k] for k in LLAVA[7:]} == {3}
    assert [n for n, _ in layer_groups(GPT2, 2)] == ["input – block 0", "block 1 – output"]
    with pytest.raises(MergeError, match="5 layer groups asked for, but the experts change tensors at 4 depth"):
        layer_groups(GPT2, 5)
    with pytest.raises(MergeError, match="positive whole number"):
        layer_groups(GPT2, 0)


@pytest.fixture(scope="module")
def lora(tiny_root):
    base = load_base(tiny_root / "base")
    return base, [load_task_vector(n, tiny_root / "experts" / n, base) for n in ("add", "rev", "sort")]


@pytest.fixture(scope="module")
def full(tiny_root):
    base = load_base(tiny_root / "base")
    return base, [load_task_vector(n, tiny_root / "full" / n, base) for n in ("a", "b")]


def _by_hand(base, experts, rows, n):
    """θ_t = θ_0,t + Σ_i w_{g(t),i} τ_i,t with g(t) the tensor's group, written out per tensor."""
    changed = [k for k in base.keys() if any(k in set(e.keys()) for e in experts)]
    group = {}
    for g, (_, members) in enumerate(layer_groups(changed, n)):
        group.update(dict.fromkeys(members, g))
    out = {}
    for k in base.keys():
        theta0 = base.get(k).float()
        if k not in group:
            out[k] = theta0
            continue
        total = theta0.clone()
        for w, e in zip(rows[group[k]], experts):
            d = e.delta(k, base.get(k))
            if d is not None:
                total += w * d.float()
        out[k] = total
    return out


@pytest.mark.parametrize("which,rows", [("lora", [[1, 0, 0], [0.2, 0.3, 0.5]]), ("full", [[1, 0], [0.5, 0.5], [0, 1]])])
def test_a_grouped_merge_is_the_per_group_weighted_sum_by_hand(request, which, rows):
    base, experts = request.getfixturevalue(which)
    names = [e.name for e in experts]
    m = Mixture.grouped(names, rows)
    assert m.groups is not None and m.weights == pytest.approx(np.mean(rows, axis=0))
    want = _by_hand(base, experts, rows, len(rows))
    spec = MergeSpec("linear", m, {})
    streamed = dict(iter_merged(base, experts, spec))
    target = {k: base.get(k).float().clone() for k in base.keys()}
    Merger(base, experts).write(target, spec)
    for k in base.keys():
        torch.testing.assert_close(streamed[k].float(), want[k], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(target[k], want[k], atol=1e-6, rtol=1e-5)
    # and it is not the plain merge at the groups' mean (the groups differ)
    plain = dict(iter_merged(base, experts, MergeSpec("linear", Mixture.of(names, list(m.weights)), {})))
    assert any(not torch.allclose(plain[k].float(), want[k]) for k in base.keys())


def test_a_grouped_ties_merge_applies_the_method_per_group(lora):
    base, experts = lora
    rows = [[0.7, 0.3, 0.0], [0.1, 0.1, 0.8]]
    method = get_method("ties")
    params = method.resolve({"density": 0.5})
    spec = MergeSpec("ties", Mixture.grouped([e.name for e in experts], rows), params)
    target = {k: base.get(k).float().clone() for k in base.keys()}
    Merger(base, experts).write(target, spec)
    streamed = dict(iter_merged(base, experts, spec))
    changed = [k for k in base.keys() if any(k in set(e.keys()) for e in experts)]
    index = group_index(changed, 2)
    for k in changed:
        theta0 = base.get(k).float()
        deltas = [e.delta(k, base.get(k)) for e in experts]
        deltas = [torch.zeros_like(theta0) if d is None else d.float() for d in deltas]
        want = method.merge(theta0, deltas, rows[index[k]], params)
        torch.testing.assert_close(target[k], want, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(streamed[k].float(), want, atol=1e-6, rtol=1e-5)


def test_a_grouped_merge_has_its_own_key_and_a_plain_merge_keeps_its_old_one():
    spec = MergeSpec("linear", Mixture.of(["a", "b"], [0.5, 0.5]), {})
    plain = CacheKey.merge("base", ["fa", "fb"], spec, {"name": "x"})
    assert "layer_groups" not in plain.model  # every key stored before layer groups reads the same
    old = CacheKey.merge("base", ["fa", "fb"], MergeSpec("linear", (0.5, 0.5), {}), {"name": "x"})
    assert plain.digest == old.digest
    g1 = CacheKey.merge("base", ["fa", "fb"], MergeSpec("linear", Mixture.grouped(["a", "b"], [[1, 0], [0, 1]])), {})
    g2 = CacheKey.merge("base", ["fa", "fb"], MergeSpec("linear", Mixture.grouped(["a", "b"], [[0, 1], [1, 0]])), {})
    assert len({g1.digest, g2.digest, CacheKey.merge("base", ["fa", "fb"], spec, {}).digest}) == 3  # same mean 0.5
    assert '"layer_groups":{"rule":1,"weights":[[1.0,0.0],[0.0,1.0]]}' in g1.model
    # the same weights in every group is the plain mixture, and its key
    assert Mixture.grouped(["a", "b"], [[0.5, 0.5], [0.5, 0.5]]) == Mixture.of(["a", "b"], [0.5, 0.5])


def test_a_grouped_score_is_cached_apart_and_left_out_of_the_plain_tables(tiny_lab_dir, tmp_path):
    engine = Engine(load_lab(tiny_lab_dir), Store(tmp_path / "c.sqlite"), device="cpu")
    names = engine.names
    grouped = Mixture.grouped(names, [[1, 0, 0], [0, 0.5, 0.5]])
    plain = Mixture.of(names, list(grouped.weights))
    (g,) = engine.proxy(grouped, None, None, ["rev-loss"])
    (p,) = engine.proxy(plain, None, None, ["rev-loss"])
    assert g.score != pytest.approx(p.score, abs=1e-9)
    assert g.params["layer_groups"] == [[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]
    before = engine.store.count()
    (again,) = engine.proxy(grouped, None, None, ["rev-loss"])
    assert engine.store.count() == before and again.score == g.score  # read back, not recomputed
    with pytest.raises(EvaluationError, match="per-layer-group weights cannot be recorded"):
        engine.request([grouped]).to_spec()  # a job record keeps one weight list per mixture: not the mean
    with pytest.raises(EvaluationError, match="scored merged"):
        proxy_scores(engine, engine.request([grouped], benchmarks=["rev-loss"], path="batched"))
    proxy = engine.results()
    proxy = proxy[proxy.kind == "proxy"]
    assert len(proxy) == 1 and "layer_groups" not in proxy.params.iloc[0]


TARGET = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # expert 0 in block 0, expert 2 in block 1


class _DistanceBackend:
    """Scores a trial by −L1 distance of its per-group weights from TARGET (a known per-group optimum)."""

    workers = 1

    def score(self, engine, request, cancel=None):
        (m,) = request.mixtures
        rows = np.asarray(m.groups if m.groups is not None else [m.weights, m.weights])
        value = 1.0 - float(np.abs(rows - TARGET).sum()) / 4
        return [SimpleNamespace(score=-value) for _ in request.benchmarks]  # rev-loss: lower is better


def _search_distance(engine, groups: int, seed: int) -> float:
    from mixlab.search import Search

    search = Search(engine, ["rev-loss"], sampler="cmaes", seed=seed, space="sparse", layer_groups=groups, storage=None)
    search.backend = _DistanceBackend()
    search._winner = lambda mixture, dev, cancel=None: {"mixture": mixture}  # no test score: none is needed here
    best = search.run(150).best[0]["mixture"]
    rows = np.asarray(best.groups if best.groups is not None else [best.weights, best.weights])
    return float(np.abs(rows - TARGET).sum())


def test_a_search_over_layer_groups_reaches_a_per_group_optimum_a_plain_one_cannot(dev_lab, tmp_path):
    """The best merge takes expert 0 in block 0 and expert 2 in block 1. CMA-ES in the sparse box with 2 layer
    groups gets within 0.1 (L1 over both groups) on seeds 0..2 in 150 trials; one weight per expert cannot get
    closer than 2 (the mean of the two rows is as close as a plain merge comes)."""
    engine = Engine(load_lab(dev_lab), Store(":memory:"), device="cpu")  # the studies in memory too
    grouped = [_search_distance(engine, 2, seed) for seed in range(3)]
    plain = [_search_distance(engine, 1, seed) for seed in range(3)]
    assert max(grouped) < 0.1, grouped
    assert min(plain) >= 2 - 1e-9, plain


def test_a_search_with_layer_groups_records_them_and_refuses_what_cannot_be(dev_lab, tmp_path):
    from mixlab.search import Search

    engine = Engine(load_lab(dev_lab), Store(tmp_path / "c.sqlite"), device="cpu")
    search = Search(engine, ["rev-loss"], sampler="random", seed=0, layer_groups=2)
    assert search.desc["layer_groups"] == 2 and "layer_groups" not in Search(engine, ["rev-loss"]).desc
    assert search.group_names == ["block 0", "block 1"]  # the tiny Llama's LoRA experts change its 2 blocks
    result = search.run(2, start=[{engine.names[0]: 1.0}])
    assert result.trials[0]["weights"] == pytest.approx({n: float(n == engine.names[0]) for n in engine.names})
    assert "groups" in result.trials[1] and len(result.trials[1]["groups"][engine.names[0]]) == 2
    assert set(result.best[0]) >= {"weights", "test", "test_objective"}
    # the stored study gives its points back per group, and a replay of them scores the same
    points = search.stored_points()
    replayed = Search(engine, ["rev-loss"], sampler="random", seed=0, layer_groups=2).replay(points)
    assert [r["values"] for r in replayed.trials] == [r["values"] for r in result.trials]
    with pytest.raises(MixlabError, match="grid sampler"):
        Search(engine, ["rev-loss"], sampler="grid", layer_groups=2)
    with pytest.raises(MergeError, match="3 layer groups asked for"):
        Search(engine, ["rev-loss"], layer_groups=3)


def test_recycling_searches_layer_groups_as_a_job_and_asked_again_reads_its_study_back(dev_lab, tmp_path):
    from mixlab.recycle import compare
    from mixlab.run.requests import RecycleJob, request

    engine = Engine(load_lab(dev_lab), Store(tmp_path / "c.sqlite"), device="cpu")
    job = request("recycle", {"objective": "rev", "sampler": "random", "trials": 3, "seed": 0, "layer_groups": 2}, None)
    assert job == RecycleJob("rev", "random", 3, 0, layer_groups=2) and job.to_spec()["layer_groups"] == 2
    assert "layer_groups" not in RecycleJob("rev", "random", 3, 0).to_spec()  # older records' specs read the same
    first = job.body(engine)(None, None)
    searched = first.rows[-1]
    assert first.origin.startswith("new study recycle-3t-") and searched["search"]["layer_groups"] == 2
    groups = searched["layer_groups"]
    assert groups["groups"] == ["block 0", "block 1"] and set(groups["weights"]) == set(engine.names)
    means = {n: sum(w) / 2 for n, w in groups["weights"].items()}
    assert {n: w for n, w in means.items() if w > 0} == pytest.approx(searched["weights"], abs=2e-6)
    assert all(
        len(p[engine.names[0]]) == 2 for p in searched["search"]["points"] if isinstance(p[engine.names[0]], list)
    )
    again = compare(engine, "rev", sampler="random", trials=3, layer_groups=2)
    assert again.origin.startswith("read back study") and again.new_scores == 0
    assert again.rows[-1]["test"] == searched["test"]
    plain = compare(engine, "rev", sampler="random", trials=3)  # a plain study is another study
    assert plain.study != first.study and "layer_groups" not in plain.rows[-1]


def test_the_command_line_recycles_with_layer_groups(dev_lab, capsys):
    from mixlab.cli import main, parser

    assert parser().parse_args(["recycle"]).layer_groups == 1
    assert main(["recycle", str(dev_lab), "--objective", "rev", "--sampler", "random", "--trials", "2",
                 "--layer-groups", "2"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "(the mean over its layer groups)" in out and "  block 0: " in out and "  block 1: " in out
    assert main(["recycle", str(dev_lab), "--trials", "2", "--layer-groups", "3"]) != 0
    assert "3 layer groups asked for, but the experts change tensors at 2 depth(s): block 0, block 1" in (
        capsys.readouterr().err
    )
