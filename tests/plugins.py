"""Evaluator plugins used by the tests (``plugins:...`` in a lab.toml)."""


def prompt_length(model, tokenizer, examples, device):
    return {
        "score": sum(len(e["prompt"]) for e in examples) / len(examples),
        "metric": "chars",
        "higher_is_better": False,
    }


def broken(model, tokenizer, examples, device):
    raise RuntimeError("plugin exploded")


def not_a_number(model, tokenizer, examples, device):
    return "high"
