import json

import pytest
import torch

from mixlab.errors import EvaluationError
from mixlab.evaluate import greedy_generate, pick_device, read_examples, run_benchmark
from mixlab.lab import BenchmarkSpec


@pytest.fixture(scope="module")
def model_tok(tiny_root):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_root / "base").eval(), AutoTokenizer.from_pretrained(
        tiny_root / "base"
    )


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_lm_loss_matches_transformers_loss(model_tok, tiny_root):
    model, tok = model_tok
    spec = BenchmarkSpec(name="l", evaluator="lm_loss", data="x")
    examples = read_examples(tiny_root / "data" / "rev.jsonl", spec)
    got = run_benchmark(model, tok, spec, examples, torch.device("cpu"), batch_size=5)
    total = count = 0.0
    for ex in examples:  # one unpadded example at a time: HF computes the masked mean itself
        p, c = [tok.bos_token_id] + _ids(tok, ex["prompt"]), _ids(tok, ex["completion"])
        ids = torch.tensor([p + c])
        labels = torch.tensor([[-100] * len(p) + c])
        with torch.no_grad():
            total += model(input_ids=ids, labels=labels).loss.item() * len(c)
        count += len(c)
    assert got.metric == "loss" and not got.higher_is_better and got.n == len(examples)
    assert got.score == pytest.approx(total / count, rel=1e-5)


def test_batched_greedy_generation_matches_unbatched_generate(model_tok):
    model, tok = model_tok
    prompts = ["rev:abc=", "sort:hgfedcba=", "add:1+2=", "count:a:aaab="]
    got = greedy_generate(model, tok, prompts, 6, ["\n"], "cpu")
    for prompt, text in zip(prompts, got):
        ids = torch.tensor([[tok.bos_token_id] + _ids(tok, prompt)])
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=[_ids(tok, "\n")[0], tok.eos_token_id],
        )
        want = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).split("\n")[0]
        assert text == want


def test_exact_match_counts_hits(model_tok, tmp_path):
    model, tok = model_tok
    prompts = ["rev:abc=", "rev:hgf=", "sort:cab=", "add:3+4="]
    outs = greedy_generate(model, tok, prompts, 6, ["\n"], "cpu")
    rows = [{"prompt": p, "answer": o if i % 2 == 0 else o + "x"} for i, (p, o) in enumerate(zip(prompts, outs))]
    spec = BenchmarkSpec(name="e", evaluator="exact_match", data="x", max_new_tokens=6)
    res = run_benchmark(
        model, tok, spec, read_examples(_jsonl(tmp_path / "e.jsonl", rows), spec), torch.device("cpu"), batch_size=3
    )
    assert res.score == 0.5 and res.higher_is_better and res.metric == "accuracy"


def test_choice_matches_per_option_log_likelihood(model_tok, tiny_root):
    model, tok = model_tok
    for normalize in (False, True):
        spec = BenchmarkSpec(name="c", evaluator="choice", data="x", length_normalize=normalize)
        examples = read_examples(tiny_root / "data" / "pick.jsonl", spec)
        hits = 0
        for ex in examples:
            ctx = [tok.bos_token_id] + _ids(tok, ex["prompt"])
            scores = []
            for c in ex["choices"]:
                ids = torch.tensor([ctx + _ids(tok, c)])
                with torch.no_grad():
                    logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
                lp = [logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(_ids(tok, c))]
                scores.append(sum(lp) / len(lp) if normalize else sum(lp))
            hits += max(range(len(scores)), key=scores.__getitem__) == ex["label"]
        got = run_benchmark(model, tok, spec, examples, torch.device("cpu"), batch_size=4)
        assert got.score == pytest.approx(hits / len(examples))


def test_plugins(model_tok, tiny_root):
    model, tok = model_tok
    ex = [{"prompt": "ab"}, {"prompt": "abcd"}]
    lower = BenchmarkSpec(name="p", evaluator="plugins:prompt_length", data="x", lower_is_better=True)
    res = run_benchmark(model, tok, lower, ex, "cpu")
    assert (res.score, res.metric, res.higher_is_better) == (3.0, "chars", False)
    with pytest.raises(EvaluationError, match="says higher_is_better=False, but the lab says the opposite"):
        run_benchmark(model, tok, BenchmarkSpec(name="p", evaluator="plugins:prompt_length", data="x"), ex, "cpu")
    with pytest.raises(EvaluationError, match="evaluator 'plugins:broken' raised RuntimeError: plugin exploded"):
        run_benchmark(model, tok, BenchmarkSpec(name="p", evaluator="plugins:broken", data="x"), ex, "cpu")
    with pytest.raises(EvaluationError, match="cannot import 'nowhere'"):
        run_benchmark(model, tok, BenchmarkSpec(name="p", evaluator="nowhere:f", data="x"), ex, "cpu")
    with pytest.raises(EvaluationError, match="plugins has no function 'nope'"):
        run_benchmark(model, tok, BenchmarkSpec(name="p", evaluator="plugins:nope", data="x"), ex, "cpu")
    with pytest.raises(EvaluationError, match="returned 'high', not a number"):
        run_benchmark(model, tok, BenchmarkSpec(name="p", evaluator="plugins:not_a_number", data="x"), ex, "cpu")


@pytest.mark.parametrize(
    ("evaluator", "line", "match"),
    [
        ("exact_match", "{bad json", r"e.jsonl:2: not valid JSON"),
        ("exact_match", '{"prompt": "a"}', r"e.jsonl:2: exact_match needs field 'answer'"),
        ("choice", '{"prompt": "a", "choices": ["x", "y"], "label": 2}', r"e.jsonl:2: 'label' must be an index"),
        ("choice", '{"prompt": "a", "choices": ["x"], "label": 0}', "at least two strings"),
        ("lm_loss", '{"prompt": "a"}', r"e.jsonl:2: lm_loss needs 'text'"),
    ],
)
def test_bad_examples_name_file_and_line(tmp_path, evaluator, line, match):
    good = {
        "exact_match": '{"prompt": "a", "answer": "b"}',
        "choice": '{"prompt": "a", "choices": ["x", "y"], "label": 0}',
        "lm_loss": '{"text": "abc"}',
    }[evaluator]
    (tmp_path / "e.jsonl").write_text(good + "\n" + line + "\n")
    with pytest.raises(EvaluationError, match=match):
        read_examples(tmp_path / "e.jsonl", BenchmarkSpec(name="e", evaluator=evaluator, data="e.jsonl"))


def test_limit_and_empty(tmp_path):
    (tmp_path / "e.jsonl").write_text('{"text": "a"}\n' * 5)
    assert (
        len(read_examples(tmp_path / "e.jsonl", BenchmarkSpec(name="e", evaluator="lm_loss", data="e", limit=2))) == 2
    )
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(EvaluationError, match="has no examples"):
        read_examples(tmp_path / "e.jsonl", BenchmarkSpec(name="e", evaluator="lm_loss", data="e"))


def test_device_choice():
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert pick_device().type in ("cpu", "mps")
        with pytest.raises(EvaluationError, match="CUDA is not available"):
            pick_device("cuda")
    with pytest.raises(EvaluationError, match="unknown device 'gpu0'"):
        pick_device("gpu0")


def test_auto_batch_size_from_free_memory():
    from types import SimpleNamespace

    from mixlab.evaluate import auto_batch_size

    cfg = SimpleNamespace(hidden_size=4096, num_hidden_layers=32, vocab_size=32000)
    per_row = 512 * (4 * 32000 + 16 * 4096 * 32 * 2)  # ≈ 2.2 GB: logits + activations at bf16
    assert auto_batch_size(cfg, free_bytes=80 * 2**30) == (40 * 2**30) // per_row
    assert auto_batch_size(cfg, free_bytes=2**20) == 1  # never below one row
    assert (
        auto_batch_size(SimpleNamespace(hidden_size=64, num_hidden_layers=2, vocab_size=46), 80 * 2**30) == 512
    )  # capped
