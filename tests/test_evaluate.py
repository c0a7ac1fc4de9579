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
    nll, tokens = [], []
    for ex in examples:  # one unpadded example at a time: HF computes the masked mean itself
        p, c = [tok.bos_token_id] + _ids(tok, ex["prompt"]), _ids(tok, ex["completion"])
        ids = torch.tensor([p + c])
        labels = torch.tensor([[-100] * len(p) + c])
        with torch.no_grad():
            nll.append(model(input_ids=ids, labels=labels).loss.item() * len(c))
        tokens.append(len(c))
        total += nll[-1]
        count += len(c)
    assert got.metric == "loss" and not got.higher_is_better and got.n == len(examples)
    assert got.score == pytest.approx(total / count, rel=1e-5)
    # per example: the summed NLL of its completion and its token count (what a bootstrap resamples)
    assert got.values.values.tolist() == pytest.approx(nll, rel=1e-4)
    assert got.values.weights.tolist() == tokens


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
        ("exact_match", '{"prompt": null, "answer": "b"}', r"e.jsonl:2: 'prompt' must be a string, got None"),
        ("exact_match", '{"prompt": "a", "answer": null}', r"e.jsonl:2: 'answer' must be a string or a number"),
        ("choice", '{"prompt": 3, "choices": ["x", "y"], "label": 0}', r"e.jsonl:2: 'prompt' must be a string"),
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
    # rows of 24 tokens whose logits are kept at one position (greedy generation): Qwen2-0.5B's shape, fp32
    qwen = SimpleNamespace(hidden_size=896, num_hidden_layers=24, vocab_size=151936)
    per_row = 1 * 4 * 151936 + 24 * 16 * 896 * 24 * 4
    assert auto_batch_size(qwen, 16 * 2**30, 24, dtype_bytes=4, logit_rows=1) == min(512, (8 * 2**30) // per_row)
    assert auto_batch_size(qwen, 16 * 2**30, dtype_bytes=4) == (8 * 2**30) // (512 * (4 * 151936 + 16 * 896 * 24 * 4))


def test_non_utf8_data_names_file_and_line(tmp_path):
    (tmp_path / "e.jsonl").write_bytes(b'{"text": "a"}\n{"text": "\xff\xfe"}\n')
    with pytest.raises(EvaluationError, match=r"e.jsonl:2: not UTF-8 text \(invalid start byte at byte 10\)"):
        read_examples(tmp_path / "e.jsonl", BenchmarkSpec(name="e", evaluator="lm_loss", data="e"))


def test_an_empty_completion_is_an_error_not_a_perfect_loss(model_tok):
    model, tok = model_tok
    for evaluator, ex in (
        ("lm_loss", {"prompt": "ab", "completion": ""}),
        ("lm_loss", {"text": ""}),
        ("choice", {"prompt": "ab", "choices": ["x", ""], "label": 0}),
    ):
        spec = BenchmarkSpec(name="e", evaluator=evaluator, data="e")
        with pytest.raises(EvaluationError, match=r"benchmark 'e', example 1: .* is empty \(zero tokens\)"):
            run_benchmark(model, tok, spec, [ex], "cpu")


def test_a_prompt_longer_than_the_context_is_refused(model_tok):
    model, tok = model_tok
    n = model.config.max_position_embeddings
    spec = BenchmarkSpec(name="e", evaluator="exact_match", data="e", max_new_tokens=8)  # BOS + n + 8 tokens
    with pytest.raises(EvaluationError, match=rf"example 2: {1 + n + 8} tokens .* exceed the model's context of {n}"):
        run_benchmark(model, tok, spec, [{"prompt": "ab", "answer": "c"}, {"prompt": "a" * n, "answer": "c"}], "cpu")
    loss = BenchmarkSpec(name="e", evaluator="lm_loss", data="e")
    with pytest.raises(EvaluationError, match="exceed the model's context"):
        run_benchmark(model, tok, loss, [{"text": "a" * (n + 1)}], "cpu")


@pytest.mark.parametrize("evaluator", ["exact_match", "lm_loss", "choice"])
def test_non_finite_logits_fail_the_evaluation(model_tok, evaluator):
    model, tok = model_tok
    ex = {"prompt": "ab", "answer": "c", "completion": "c", "choices": ["c", "d"], "label": 0}
    spec = BenchmarkSpec(name="e", evaluator=evaluator, data="e")
    saved = model.lm_head.weight.detach().clone()
    try:
        with torch.no_grad():
            model.lm_head.weight[3, 0] = float("nan")
        with pytest.raises(EvaluationError, match="forward pass gave NaN or inf logits"):
            run_benchmark(model, tok, spec, [ex], "cpu")
    finally:
        with torch.no_grad():
            model.lm_head.weight.copy_(saved)


def test_a_plugin_with_non_finite_logits_fails_too(model_tok, tmp_path):
    model, tok = model_tok
    (tmp_path / "logitsplug.py").write_text(
        "def run(model, tokenizer, examples, device):\n"
        "    import torch\n"
        "    model(input_ids=torch.tensor([[1, 2]]))\n"
        "    return 1.0\n"
    )
    spec = BenchmarkSpec(name="e", evaluator="logitsplug:run", data="e")
    saved = model.lm_head.weight.detach().clone()
    try:
        with torch.no_grad():
            model.lm_head.weight[3, 0] = float("inf")
        with pytest.raises(EvaluationError, match="forward pass gave NaN or inf logits"):
            run_benchmark(model, tok, spec, [{"prompt": "a"}], "cpu", plugin_dirs=[tmp_path])
    finally:
        with torch.no_grad():
            model.lm_head.weight.copy_(saved)
    assert run_benchmark(model, tok, spec, [{"prompt": "a"}], "cpu", plugin_dirs=[tmp_path]).score == 1.0


def test_plugins_are_never_imported_from_the_current_folder(model_tok, tmp_path, monkeypatch):
    import sys

    model, tok = model_tok
    (tmp_path / "cwdplug.py").write_text("def run(*a):\n    return 0.5\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as `python -m mixlab` run inside a lab puts it there
    sys.modules.pop("cwdplug", None)
    spec = BenchmarkSpec(name="e", evaluator="cwdplug:run", data="e")
    with pytest.raises(EvaluationError, match="cannot import 'cwdplug' from installed packages"):
        run_benchmark(model, tok, spec, [{"prompt": "a"}], "cpu")
    assert "cwdplug" not in sys.modules
    assert run_benchmark(model, tok, spec, [{"prompt": "a"}], "cpu", plugin_dirs=[tmp_path]).score == 0.5


def test_a_plugin_that_fails_to_import_is_one_clear_error(model_tok, tmp_path):
    model, tok = model_tok
    (tmp_path / "badplug.py").write_text("raise ValueError('broken at import')\n")
    spec = BenchmarkSpec(name="e", evaluator="badplug:run", data="e")
    with pytest.raises(EvaluationError, match="importing 'badplug' raised ValueError: broken at import"):
        run_benchmark(model, tok, spec, [{"prompt": "a"}], "cpu", plugin_dirs=[tmp_path])


def test_cpu_out_of_memory_halves_the_batch_then_fails_clearly(model_tok, monkeypatch):
    import mixlab.evaluate.builtin as ev

    model, tok = model_tok
    sizes = []
    real = ev.continuation_logprobs

    def tight(model_, batch, pad, device):
        sizes.append(len(batch))
        if len(batch) > 2:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory")
        return real(model_, batch, pad, device)

    monkeypatch.setattr(ev, "continuation_logprobs", tight)
    spec = BenchmarkSpec(name="e", evaluator="lm_loss", data="e")
    rows = [{"text": "abc"}] * 5
    assert run_benchmark(model, tok, spec, rows, "cpu", batch_size=8).n == 5 and sizes[:3] == [5, 4, 2]

    def never(*a):
        raise MemoryError()

    monkeypatch.setattr(ev, "continuation_logprobs", never)
    with pytest.raises(EvaluationError, match="out of memory at batch size 1"):
        run_benchmark(model, tok, spec, rows, "cpu", batch_size=4)


def test_an_unavailable_mps_device_is_a_clear_error():
    if not torch.backends.mps.is_available():
        with pytest.raises(EvaluationError, match="MPS \\(Apple GPU\\) is not available here"):
            pick_device("mps")


def test_prompts_follow_the_tokenizers_own_convention():
    from tokenizers import processors

    from mixlab.demo.tasks import build_tokenizer
    from mixlab.evaluate import prepare

    llama_like = build_tokenizer()  # puts BOS first itself, as Llama's does
    gpt2_like = build_tokenizer()
    gpt2_like._tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B", special_tokens=[])
    ab, cd = _ids(llama_like, "ab"), _ids(llama_like, "cd")
    bos, eos = llama_like.bos_token_id, llama_like.pad_token_id
    for tok, head in ((llama_like, [bos]), (gpt2_like, [])):
        gen = prepare(
            tok, BenchmarkSpec(name="g", evaluator="exact_match", data="d"), [{"prompt": "ab", "answer": "c"}]
        )
        loss = prepare(
            tok,
            BenchmarkSpec(name="l", evaluator="lm_loss", data="d"),
            [{"prompt": "ab", "completion": "cd"}, {"text": "cd"}],
        )
        assert gen[0]["ids"] == head + ab
        assert loss[0]["pair"] == (head + ab, cd)  # the continuation never gets special tokens
        assert loss[1]["pair"] == (head or [eos], cd)  # scored whole: after BOS, or after one pad/EOS token


def test_the_tokenisation_convention_is_part_of_the_key():
    from mixlab.evaluate import TOKENIZATION
    from mixlab.keys import benchmark_desc

    assert benchmark_desc(BenchmarkSpec(name="x", evaluator="lm_loss", data="d"), "sha")["tokenization"] == TOKENIZATION


def _png(size=(16, 16)) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (*size, 3)).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def _bomb_png(side: int = 40_000) -> bytes:
    """A valid small PNG whose header declares side × side pixels (PIL reads the size from the header)."""
    import struct
    import zlib

    data = _png()
    body = b"IHDR" + struct.pack(">II", side, side) + data[24:29]  # depth, colour type, methods kept
    return data[:8] + struct.pack(">I", 13) + body + struct.pack(">I", zlib.crc32(body)) + data[33:]


@pytest.mark.parametrize(
    ("content", "msg"),
    [
        (_bomb_png(), r"too many pixels to open safely \(Image size \(1600000000 pixels\)"),
        (_bomb_png(10_000), r"too many pixels to open safely"),  # over the warning limit, under the error one
        (_png((64, 64))[:2000], "the file is truncated"),
        (b'{"not": "an image"}', "not an image file PIL can read"),
    ],
    ids=["bomb", "big", "truncated", "not-an-image"],
)
def test_a_bad_image_is_an_error_naming_its_file(tmp_path, content, msg):
    from types import SimpleNamespace

    from mixlab.evaluate import Batches, image_answers, open_image

    path = tmp_path / "pic.png"
    path.write_bytes(content)
    with pytest.raises(EvaluationError, match=rf"image {path}: {msg}.*replace it with a PNG or JPEG"):
        open_image(path)
    processor = SimpleNamespace(tokenizer=SimpleNamespace(), image_token="<image>")
    rows = [{"_image": str(path), "prompt": "what?", "answer": "a"}]
    spec = BenchmarkSpec(name="pics", evaluator="exact_match", data="data/pics.jsonl")
    with pytest.raises(EvaluationError, match=rf"image {path}: {msg}"):  # the evaluation's own reader
        image_answers(None, processor, rows, spec, "cpu", Batches(4, None, None))
    assert open_image(_write(tmp_path / "ok.png", _png())).size == (16, 16)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path
