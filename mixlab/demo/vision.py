"""The multimodal demo: a tiny LLaVA-style model (SigLIP-like vision tower, projector, Llama language
model: transformers' own classes) and four image domains drawn with Pillow, as the seed paper's general /
OCR / counting / chart mixture in miniature.

Images are 32×32 RGB. Questions and answers use the text demo's character tokenizer plus an ``<image>``
token, which the processor expands into one token per 8×8 patch (16).

- ``general``: one shape (circle, square, triangle) in one of four colours. ``shape:`` → ``circle``.
- ``ocr``: a digit drawn as seven segments, in a random colour and place. ``digit:`` → ``7``.
- ``count``: 1–5 small squares. ``count:`` → ``3``.
- ``chart``: three bars of distinct heights. ``tallest:`` → ``a`` | ``b`` | ``c`` (left to right).

Pretraining (the base) is captioning — ``caption:`` → what the image shows (``red circle``, ``digit 7``,
``three blue squares``, ``green bars, b tallest``) — plus 0.5% questions: the base sees what every domain
asks about but has hardly practised the questions' formats (partly able in each); experts and true
mixtures train LoRA on the language model only (the vision tower and projector stay frozen) on their
domains' questions, which is where the mixture matters.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable

import numpy as np
import torch

SIZE, PATCH = 32, 8
# the base's pretraining: captions, and this small share of questions (partly able, not trained on them)
CAPTIONS = 0.995
IMAGE_TOKEN = "<image>"
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 80, 220), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")
# seven segments (a–g) as boxes on a 10×16 grid, and which segments each digit lights
SEGMENTS = {
    "a": (1, 0, 9, 2), "b": (8, 1, 10, 8), "c": (8, 8, 10, 15), "d": (1, 14, 9, 16),
    "e": (0, 8, 2, 15), "f": (0, 1, 2, 8), "g": (1, 7, 9, 9),
}  # fmt: skip
DIGITS = {
    "0": "abcdef", "1": "bc", "2": "abged", "3": "abgcd", "4": "fgbc",
    "5": "afgcd", "6": "afgedc", "7": "abc", "8": "abcdefg", "9": "abcfgd",
}  # fmt: skip


def _canvas():
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    return img, ImageDraw.Draw(img)


def _shape(draw, shape: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)


def general(rng: random.Random):
    colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
    s = rng.randint(12, 20)
    x, y = rng.randint(0, SIZE - s - 1), rng.randint(0, SIZE - s - 1)
    img, draw = _canvas()
    _shape(draw, shape, (x, y, x + s, y + s), COLOURS[colour])
    return img, "shape:", shape, f"{colour} {shape}"


def ocr(rng: random.Random):
    digit, colour = rng.choice(list(DIGITS)), rng.choice(list(COLOURS))
    x, y = rng.randint(2, SIZE - 22), rng.randint(0, SIZE - 32)  # the digit is full height: y is 0
    img, draw = _canvas()
    for seg in DIGITS[digit]:
        a, b, c, d = SEGMENTS[seg]
        draw.rectangle((x + 2 * a, y + 2 * b, x + 2 * c - 1, y + 2 * d - 1), fill=COLOURS[colour])
    return img, "digit:", digit, f"digit {digit}"


def count(rng: random.Random):
    n = rng.randint(1, 5)
    img, draw = _canvas()
    cells = rng.sample(range(16), n)  # a 4×4 grid of 8-pixel cells: squares never overlap
    colour = rng.choice(list(COLOURS))
    for c in cells:
        x, y = (c % 4) * 8 + rng.randint(0, 2), (c // 4) * 8 + rng.randint(0, 2)
        draw.rectangle((x, y, x + 4, y + 4), fill=COLOURS[colour])
    return img, "count:", str(n), f"{NUMBERS[n]} {colour} squares"


def chart(rng: random.Random):
    heights = rng.sample(range(6, 29), 3)
    img, draw = _canvas()
    colour = rng.choice(list(COLOURS))
    for i, h in enumerate(heights):
        x = 3 + i * 10
        draw.rectangle((x, SIZE - h, x + 6, SIZE - 1), fill=COLOURS[colour])
    tallest = "abc"[int(np.argmax(heights))]
    return img, "tallest:", tallest, f"{colour} bars, {tallest} tallest"


NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}  # captions count in words, answers in digits
DOMAINS: dict[str, Callable] = {"general": general, "ocr": ocr, "count": count, "chart": chart}


def png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def build_tokenizer():
    """The text demo's character tokenizer plus the image token."""
    from mixlab.demo.tasks import build_tokenizer as text_tokenizer

    tok = text_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return tok


def build_processor(tokenizer):
    from transformers import LlavaProcessor, SiglipImageProcessorPil

    images = SiglipImageProcessorPil(
        size={"height": SIZE, "width": SIZE}, do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
        image_token=IMAGE_TOKEN,
    )


def model_config(tokenizer, hidden: int = 64, layers: int = 2, vision_hidden: int = 48):
    from transformers import LlamaConfig, LlavaConfig, SiglipVisionConfig

    vision = SiglipVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=2 * vision_hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=SIZE,
        patch_size=PATCH,
        num_channels=3,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden + hidden // 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_seq_length=(SIZE // PATCH) ** 2,
    )


def save_model(model, processor, folder) -> None:
    """The model as users' checkpoints are written: ``save_pretrained`` (transformers stores LLaVA's weights
    under its checkpoint names, ``language_model.model.*``, ``vision_tower.*``, and renames them on load),
    with the processor beside it."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def sample(domain: str, rng: random.Random, caption: bool = False):
    """(image, prompt, answer) of ``domain``; ``caption``: the pretraining form of the same image."""
    img, prompt, answer, described = DOMAINS[domain](rng)
    return (img, "caption:", described) if caption else (img, prompt, answer)


class Stream:
    """Training batches: each row's domain drawn by the mixture weights; a ``caption`` share of the rows are
    captions (pretraining) instead of questions. Loss on the answer tokens only (and the caption's)."""

    def __init__(self, processor, names, weights, seed: int, caption: float = 0.0):
        w = np.asarray(weights, dtype=np.float64)
        self.proc, self.names, self.caption = processor, list(names), caption
        self.w = w / w.sum()
        self.rng, self.np_rng = random.Random(seed), np.random.default_rng(seed)

    def batch(self, size: int) -> dict:
        tok = self.proc.tokenizer
        tok.padding_side = "right"
        domains = self.np_rng.choice(len(self.names), size=size, p=self.w)
        rows = [sample(self.names[d], self.rng, self.rng.random() < self.caption) for d in domains]
        texts = [f"{IMAGE_TOKEN}{p}{a}\n" for _, p, a in rows]
        enc = self.proc(text=texts, images=[img for img, _, _ in rows], return_tensors="pt", padding=True)
        labels = torch.full_like(enc["input_ids"], -100)
        for i, (_, _, a) in enumerate(rows):
            n_answer = len(tok(a + "\n", add_special_tokens=False)["input_ids"])
            length = int(enc["attention_mask"][i].sum())
            labels[i, length - n_answer : length] = enc["input_ids"][i, length - n_answer : length]
        enc["labels"] = labels
        return enc


# --- building the lab (python -m mixlab demo build --multimodal) ---------------------------------------


def write_benchmark(root, name: str, n: int, seed: int, dev: bool = False) -> str:
    """``n`` rows of domain ``name`` with their images under ``images/``; returns the JSONL path."""
    import json

    split = f"{name}_dev" if dev else name
    rng = random.Random((20_000 if dev else 10_000) + 97 * list(DOMAINS).index(name) + seed)
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    with open(root / "data" / f"{split}.jsonl", "w") as f:
        for i in range(n):
            img, prompt, answer = sample(name, rng)
            rel = f"images/{split}/{i:04d}.png"
            (root / rel).write_bytes(png(img))
            f.write(json.dumps({"image": rel, "prompt": prompt, "answer": answer}) + "\n")
    return f"data/{split}.jsonl"


def dev_ability(model, processor, seed: int, n: int = 60) -> dict[str, float]:
    """Greedy exact match per domain on ``n`` dev images drawn apart from the benchmarks'."""
    from mixlab.evaluate import Batches, image_answers
    from mixlab.lab import BenchmarkSpec

    spec = BenchmarkSpec(name="dev", evaluator="exact_match", data="(dev)", max_new_tokens=10)
    out = {}
    for j, name in enumerate(DOMAINS):
        rng = random.Random(30_000 + 13 * j + seed)
        rows = []
        for _ in range(n):
            img, prompt, answer = sample(name, rng)
            rows.append({"_image": io.BytesIO(png(img)), "prompt": prompt, "answer": answer})
        answers = image_answers(model, processor, rows, spec, torch.device("cpu"), Batches(n, None, None))
        out[name] = sum(a.strip() == r["answer"] for a, r in zip(answers, rows)) / n
    return out


def build_vl(
    out=None,
    *,
    quick: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    show: bool = True,
    budget=None,
    replicates: int = 1,
):
    """Train and write ``cache/demo-vl`` (see the module docstring): the base pretrained on captions plus
    every domain's questions until partly able, 4 LoRA experts on the language model, and true mixtures on
    the paper's K=4 points (20 Dirichlet + uniform), with the same budget each, each ``replicates`` times
    (seeded as the text labs' replicates: a noise ceiling); then the lab's checkpoint scores and linear
    proxies at the true points."""
    import time
    from pathlib import Path

    from peft import LoraConfig, get_peft_model
    from tqdm.auto import tqdm
    from transformers import LlavaForConditionalGeneration

    from mixlab.demo import LABS_DIR
    from mixlab.demo.build import (
        FULL,
        QUICK,
        REPLICATE_SEED,
        _train,
        mixture_points,
        seeds_text,
        staged_lab,
        training_runs,
        write_build_info,
        write_manifest,
    )
    from mixlab.engine import EXPORT_FILE, Engine
    from mixlab.evaluate import quiet_transformers
    from mixlab.lab import load_lab
    from mixlab.scoring import checkpoints
    from mixlab.simplex import Mixture
    from mixlab.store import Store
    from mixlab.values import VALUES_FILE

    budget = budget or (QUICK if quick else FULL)
    names = list(DOMAINS)
    out = Path(out) if out else LABS_DIR / ("demo-vl-quick" if quick else "demo-vl")
    quiet_transformers()
    start = time.perf_counter()
    with staged_lab(out, overwrite) as root:
        tok = build_tokenizer()
        proc = build_processor(tok)
        benches = []
        for n in names:
            data = write_benchmark(root, n, budget.n_eval, seed)
            dev = write_benchmark(root, n, budget.n_eval, seed, dev=True)
            benches.append(
                {"name": n, "evaluator": "exact_match", "data": data, "search_data": dev, "max_new_tokens": 10}
            )

        torch.manual_seed(seed)
        base = LlavaForConditionalGeneration(model_config(tok))
        stream = Stream(proc, names, np.ones(len(names)), seed, caption=CAPTIONS)

        def able() -> bool:
            return budget.base_target > 0 and min(dev_ability(base, proc, seed).values()) >= budget.base_target

        steps = _train(
            base, stream, budget.base_steps, budget.batch, budget.lr_base, "base", show, able, budget.base_check
        )
        base_dev = dev_ability(base, proc, seed)
        save_model(base, proc, root / "base")

        points = mixture_points(len(names), quick, seed)
        runs, trues = training_runs(names, points, replicates)
        lora = LoraConfig(
            r=budget.lora_r,
            lora_alpha=2 * budget.lora_r,
            lora_dropout=0.0,
            target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
        )  # the language model's linear layers: the vision tower and projector stay frozen
        for rel, w, desc, offset in tqdm(runs, desc="fine-tuning lora", disable=not show):
            torch.manual_seed(seed + offset)
            model = get_peft_model(LlavaForConditionalGeneration.from_pretrained(root / "base"), lora)
            _train(model, Stream(proc, names, w, seed + offset), budget.steps, budget.batch, budget.lr, desc, show)
            model.save_pretrained(root / rel)
            (root / rel / "README.md").unlink(missing_ok=True)

        description = (
            f"Built by `python -m mixlab demo build --multimodal{' --quick' if quick else ''}"
            f"{f' --replicates {replicates}' if replicates > 1 else ''}`: a tiny LLaVA-style "
            f"model (SigLIP-like tower, projector, Llama), base pretrained {steps} steps on captions and questions "
            f"(dev exact match {', '.join(f'{n} {v:.2f}' for n, v in base_dev.items())}), LoRA experts on the "
            f"language model, {len(points)} true mixtures{seeds_text(replicates, 'all')}, {budget.steps} steps × "
            f"{budget.batch} images each."
        )
        write_manifest(
            root,
            "demo-vl" + ("-quick" if quick else ""),
            description,
            names,
            benches,
            trues,
            merge={"preset": "lora"},
            merge_comment="preset lora: the vision tower, projector, embeddings, lm_head and norms stay the base's",
        )

        store = Store(":memory:")
        engine = Engine(load_lab(root), store, device="cpu")
        checkpoints.checkpoint_scores(engine)
        engine.sweep([Mixture.of(names, p) for p in points], "linear")
        store.export_jsonl(root / EXPORT_FILE)
        store.export_values(root / VALUES_FILE)
        store.close()
        info = {
            "seed": seed,
            "domains": names,
            "quick": quick,
            "budget": budget.__dict__,
            **(
                {"replicates": replicates, "replicate_seed": REPLICATE_SEED, "replicate_subset": "all"}
                if replicates > 1
                else {}
            ),
            "base_steps_taken": steps,
            "base_dev_exact_match": {n: round(v, 3) for n, v in base_dev.items()},
            "seconds": round(time.perf_counter() - start, 1),
        }
        write_build_info(root, info)
    return out
