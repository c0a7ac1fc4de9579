"""The VLM image strip: an image benchmark's first rows (image, prompt, expected answer) and what a
merge answers to them."""

from __future__ import annotations

from mixlab.errors import EvaluationError
from mixlab.evaluate import has_images
from mixlab.scoring.request import Method
from mixlab.simplex import Mixture


def examples(engine, benchmark: str, n: int = 6) -> list[dict]:
    """The first ``n`` rows of an image benchmark: image path (inside the lab), prompt, answer."""
    rows = engine._bench(engine.lab.benchmark(benchmark)).examples[:n]
    return [{"image": r["_image"], "prompt": r["prompt"], "answer": str(r["answer"])} for r in rows if "_image" in r]


def answers(engine, mixture: Mixture, benchmark: str, n: int, method: Method) -> list[dict]:
    """The merge's own answers to the first ``n`` rows of an image benchmark (the dashboard's strip of
    examples): each row's image path, prompt, expected answer and the merged model's output."""
    from mixlab.evaluate import Batches, image_answers

    b = engine.lab.benchmark(benchmark)
    rows = engine._bench(b).examples[:n]
    if not has_images(rows):
        raise EvaluationError(f"benchmark {benchmark!r} has no images")
    with engine._lock:
        engine.resident.load_merge(method.spec(mixture, engine.excluded))
        outs = image_answers(engine.model, engine.resident.processor, rows, b, engine.device, Batches(n, None, None))
    return [{**ex, "output": o} for ex, o in zip(examples(engine, benchmark, n), outs)]


def benchmarks(engine) -> list[str]:
    """The lab's benchmarks whose rows carry images."""
    return [b.name for b in engine.lab.benchmarks if has_images(engine._bench(b).examples)]
