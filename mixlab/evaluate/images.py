"""Image questions for a vision-language base: an image read safely (a bad or oversized file is an error
naming it) and greedy answers through the base's processor."""

from __future__ import annotations

from collections.abc import Sequence

from mixlab.errors import EvaluationError
from mixlab.evaluate.batches import Batches, FiniteLogits
from mixlab.evaluate.builtin import cut_at_stop
from mixlab.evaluate.tokens import pad_id
from mixlab.lab import BenchmarkSpec


def open_image(path):
    """The image at ``path`` as RGB (a PIL image), read whole now; a file that is not one, is cut short, or
    declares more pixels than PIL opens safely (``PIL.Image.MAX_IMAGE_PIXELS``: a decompression bomb) is an
    EvaluationError naming it."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    fix = "replace it with a PNG or JPEG image, or remove its row from the benchmark"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise EvaluationError(
            f"image {path}: too many pixels to open safely ({e}); {fix} (a smaller one: at most "
            f"{Image.MAX_IMAGE_PIXELS:,} pixels)"
        ) from None
    except UnidentifiedImageError:
        raise EvaluationError(f"image {path}: not an image file PIL can read; {fix}") from None
    except (OSError, SyntaxError, ValueError) as e:  # PIL's "image file is truncated", "broken PNG file", …
        what = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        if "truncated" in what:
            raise EvaluationError(f"image {path}: the file is truncated (cut short); {fix}") from None
        raise EvaluationError(f"image {path}: cannot read it ({what}); {fix}") from None


def image_answers(
    model, processor, examples: Sequence[dict], spec: BenchmarkSpec, device, batches: Batches
) -> list[str]:
    """Greedy answers to image questions (rows ``{"image", "prompt", ...}``; the image path resolved by the
    engine into ``_image``): the base's processor puts each image and its prompt into one batch (the
    class's image placeholder is prepended where the prompt lacks the image token:
    :func:`mixlab.processors.image_inputs`), generation stops at ``stop`` or ``max_new_tokens``."""
    from mixlab.processors import image_inputs

    tok = processor.tokenizer

    def answer(batch):
        images = [open_image(ex["_image"]) for ex in batch]
        inputs = image_inputs(processor, [ex["prompt"] for ex in batch], images).to(device)
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        with FiniteLogits(model):
            out = model.generate(
                **inputs, max_new_tokens=spec.max_new_tokens, do_sample=False, pad_token_id=pad_id(tok)
            )
        new = tok.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return [cut_at_stop(t, spec.stop) for t in new]

    return batches.run(list(examples), answer)
