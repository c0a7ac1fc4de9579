"""Proxies beside the merge, each against a hand computation: the output-space proxy (mixed token
distributions) with two PEFT experts loaded by transformers + peft, and the fitted proxies by least squares."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mixlab.engine import Engine
from mixlab.errors import MixlabError
from mixlab.lab import load_lab
from mixlab.proxies.output import OutputSpaceProxy, mix_logprobs, mixed_greedy
from mixlab.scoring import checkpoints
from mixlab.store import Store


def test_mix_logprobs_is_the_log_of_the_weighted_mixture_by_hand():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    got = mix_logprobs(torch.tensor(np.log(p)), [0.25, 0.75])
    np.testing.assert_allclose(got.numpy(), np.log(0.25 * p[0] + 0.75 * p[1]), rtol=1e-12)
    np.testing.assert_allclose(mix_logprobs(torch.tensor(np.log(p)), [1.0, 0.0]).numpy(), np.log(p[0]), rtol=1e-12)
    with pytest.raises(MixlabError, match="must sum to 1, got 0.9"):
        mix_logprobs(torch.tensor(np.log(p)), [0.5, 0.4])
    with pytest.raises(MixlabError, match="finite and ≥ 0"):
        mix_logprobs(torch.tensor(np.log(p)), [1.5, -0.5])
    with pytest.raises(MixlabError, match="2 experts' log-probabilities but 3 weights"):
        mix_logprobs(torch.tensor(np.log(p)), [0.5, 0.25, 0.25])


def _peft(lab_dir, name):
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    return PeftModel.from_pretrained(
        LlamaForCausalLM.from_pretrained(lab_dir / "base"), lab_dir / "experts" / name
    ).eval()


def _rows(lab_dir, file):
    return [json.loads(line) for line in (lab_dir / "data" / file).read_text().splitlines() if line.strip()]


def test_the_output_space_loss_is_the_mixed_distributions_nll_by_hand(tiny_lab_dir):
    from transformers import AutoTokenizer

    engine = Engine(load_lab(tiny_lab_dir), Store(":memory:"), device="cpu")
    proxy = OutputSpaceProxy(engine)
    experts = {e.label: e.score for e in checkpoints.expert_scores(engine, ["rev-loss"])}
    for i, name in enumerate(engine.names):  # a one-hot mixture is the expert itself
        onehot = [float(j == i) for j in range(3)]
        assert proxy.score(onehot, "rev-loss")[0] == pytest.approx(experts[name], rel=1e-5)
    tok = AutoTokenizer.from_pretrained(tiny_lab_dir / "base")
    models = {n: _peft(tiny_lab_dir, n) for n in ("add", "rev")}
    nll, tokens = 0.0, 0
    for ex in _rows(tiny_lab_dir, "rev.jsonl"):
        prompt = tok(ex["prompt"])["input_ids"]
        cont = tok(ex["completion"], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + cont])
        with torch.no_grad():
            probs = {n: torch.softmax(m(input_ids=ids).logits[0].double(), -1) for n, m in models.items()}
        for t, y in enumerate(cont):
            at = len(prompt) + t - 1  # the position that predicts token t of the continuation
            nll -= float(torch.log(0.3 * probs["add"][at, y] + 0.7 * probs["rev"][at, y]))
            tokens += 1
    score, n = proxy.score([0.3, 0.7, 0.0], "rev-loss")
    assert n == 12 and score == pytest.approx(nll / tokens, rel=1e-5)


def test_exact_match_decodes_greedily_from_the_mixed_distribution_by_hand(tiny_lab_dir):
    from transformers import AutoTokenizer

    engine = Engine(load_lab(tiny_lab_dir), Store(":memory:"), device="cpu")
    proxy = OutputSpaceProxy(engine)
    experts = {e.label: e.score for e in checkpoints.expert_scores(engine, ["rev"])}
    assert proxy.score([0.0, 1.0, 0.0], "rev")[0] == pytest.approx(experts["rev"])  # one-hot: the expert
    tok = AutoTokenizer.from_pretrained(tiny_lab_dir / "base")
    models = [_peft(tiny_lab_dir, n) for n in ("add", "rev", "sort")]
    w = [0.5, 0.2, 0.3]
    spec = engine.lab.benchmark("rev")
    rows = _rows(tiny_lab_dir, "rev.jsonl")[:4]
    prompts = [tok(ex["prompt"])["input_ids"] for ex in rows]
    got = mixed_greedy(proxy.models, engine.tokenizer, prompts, w, spec.max_new_tokens, spec.stop, "cpu")
    for prompt, text in zip(prompts, got):  # by hand: full forwards, no cache, no padding
        ids = list(prompt)
        for _ in range(spec.max_new_tokens):
            with torch.no_grad():
                p = sum(wi * torch.softmax(m(input_ids=torch.tensor([ids])).logits[0, -1].double(), -1)
                        for wi, m in zip(w, models))  # fmt: skip
            y = int(p.argmax())
            ids.append(y)
            if y == tok.eos_token_id or tok.decode([y]) == "\n":
                break
        hand = tok.decode(ids[len(prompt) :], skip_special_tokens=True).split("\n")[0]
        assert text == hand
    with pytest.raises(MixlabError, match="output-space proxy scores lm_loss and exact_match benchmarks; 'pick'"):
        proxy.score(w, "pick")


def test_affine_maps_and_the_calibrated_mean_by_least_squares_by_hand():
    from mixlab.proxies.fitted import affine_maps, calibrated_mean

    rng = np.random.default_rng(0)
    proxy = rng.uniform(size=(9, 2))
    true = np.column_stack([0.1 + 0.5 * proxy[:, 0], 0.3 + 0.2 * proxy[:, 1]]) + rng.normal(0, 0.01, size=(9, 2))
    maps = affine_maps(proxy, true)
    for b in range(2):
        slope, intercept = np.polyfit(proxy[:, b], true[:, b], 1)
        assert maps[b] == pytest.approx([intercept, slope])
    new = rng.uniform(size=(4, 2))
    hand = np.mean([maps[b, 0] + maps[b, 1] * new[:, b] for b in range(2)], axis=0)
    np.testing.assert_allclose(calibrated_mean(proxy, true, new), hand)
    # a proxy that is an exact affine image of the truth is calibrated back onto it
    exact = np.column_stack([(true[:, 0] - 0.2) / 3, 4 * true[:, 1] + 1])
    np.testing.assert_allclose(calibrated_mean(exact[:5], true[:5], exact[5:]), true[5:].mean(1), atol=1e-12)


def test_the_proxy_feature_regression_is_least_squares_with_an_intercept_by_hand():
    from mixlab.proxies.fitted import feature_regression

    rng = np.random.default_rng(1)
    x, y, new = rng.normal(size=(10, 3)), rng.normal(size=10), rng.normal(size=(2, 3))
    coef, *_ = np.linalg.lstsq(np.column_stack([np.ones(10), x]), y, rcond=None)
    np.testing.assert_allclose(feature_regression(x, y, new), np.column_stack([np.ones(2), new]) @ coef, atol=1e-10)


class _Bench:
    def __init__(self, name):
        self.name, self.higher_is_better = name, True


def test_fitted_report_leaves_one_out_like_a_hand_loop():
    from scipy import stats

    from mixlab.analysis import MEAN
    from mixlab.proxies.fitted import fitted_report

    rng = np.random.default_rng(2)
    rows = []
    ws = rng.dirichlet([1, 1], size=10)
    true = np.column_stack([ws[:, 0], 1 - ws[:, 0] ** 2]) + rng.normal(0, 0.05, size=(10, 2))
    proxy = np.column_stack([2 * ws[:, 0], 0.5 - 0.1 * ws[:, 0] ** 2]) + rng.normal(0, 0.05, size=(10, 2))
    for i, w in enumerate(ws):
        for b, name in enumerate("xy"):
            for kind, s in (("proxy", proxy[i, b]), ("true", true[i, b])):
                rows.append(dict(kind=kind, label=f"{kind}{i}", benchmark=name, score=float(s),
                                 weights={"a": float(w[0]), "b": float(w[1])}))  # fmt: skip
    df = pd.DataFrame(rows).assign(higher_is_better=True, method=None, params=None, n=np.nan, metric="score")
    rep = fitted_report(df, ["a", "b"], [_Bench("x"), _Bench("y")], repeats=3, n_boot=0)
    pred = []
    for i in range(10):
        keep = np.arange(10) != i
        maps = [np.polyfit(proxy[keep, b], true[keep, b], 1) for b in range(2)]
        pred.append(np.mean([maps[b][1] + maps[b][0] * proxy[i, b] for b in range(2)]))
    assert rep["n"] == 10 and MEAN not in rep["loo"]
    assert rep["loo"]["calibrated"]["spearman"] == pytest.approx(stats.spearmanr(pred, true.mean(1)).statistic)
    assert rep["proxy"]["spearman"] == pytest.approx(stats.spearmanr(proxy.mean(1), true.mean(1)).statistic)
    assert [c["n_train"] for c in rep["curve"]] == [3, 4, 6]
