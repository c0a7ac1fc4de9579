"""The batched-mixture LoRA layer (mixlab.batched) against an nn.Linear holding the merged weights.

Row b of a batch carries its own mixture c[b]; the layer must give, for that row, what a plain nn.Linear
gives with W = W_0 + Σ_k c[b, k]·s_k·B_k A_k written into it: checked by hand on numbers small enough to
follow, on random factors of unequal ranks, and on a real model whose experts PEFT merges for reference.
"""

import pytest
import torch
from torch import nn

from mixlab.batched import BatchedLora, MixtureLinear, MixtureState
from mixlab.checkpoint import load_base
from mixlab.experts import load_task_vector


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def test_one_row_by_hand():
    # W_0 = [[1, 2]], bias 0.5; one expert of rank 1: A = [[1, 0]], s·B = [[3]] → ΔW = [[3, 0]]
    # with c = 0.5: W = [[2.5, 2]], so x = [1, 1] gives 2.5 + 2 + 0.5 = 5
    base = _linear(torch.tensor([[1.0, 2.0]]), torch.tensor([0.5]))
    state = MixtureState(1, torch.device("cpu"))
    layer = MixtureLinear(base, torch.tensor([[1.0, 0.0]]), torch.tensor([[3.0]]), torch.tensor([0]), state)
    state.set(torch.tensor([[0.5]]))
    assert layer(torch.tensor([[[1.0, 1.0]]])).tolist() == [[[5.0]]]
    state.set(torch.tensor([[0.0]]))  # no expert: the base layer exactly
    assert layer(torch.tensor([[[1.0, 1.0]]])).tolist() == [[[3.5]]]


@pytest.mark.parametrize("bias", [True, False])
def test_each_row_equals_a_linear_layer_holding_its_merged_weights(bias):
    g = torch.Generator().manual_seed(0)
    d_in, d_out, ranks, scales = 6, 5, (2, 3, 1), (0.5, 2.0, 1.0)
    w0 = torch.randn(d_out, d_in, generator=g)
    b0 = torch.randn(d_out, generator=g) if bias else None
    a_k = [torch.randn(r, d_in, generator=g) for r in ranks]  # (r_k, in)
    b_k = [torch.randn(d_out, r, generator=g) for r in ranks]  # (out, r_k)
    a = torch.cat(a_k)  # (R, in), as concat_factors stacks them
    b = torch.cat([s * bb for s, bb in zip(scales, b_k)], 1)  # (out, R), s_k folded in
    group = torch.tensor([k for k, r in enumerate(ranks) for _ in range(r)])
    state = MixtureState(3, torch.device("cpu"))
    layer = MixtureLinear(_linear(w0, b0), a, b, group, state)
    coef = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.0, 0.0, 0.0], [1.5, -0.5, 0.25]])  # (B, K)
    x = torch.randn(4, 3, d_in, generator=g)  # (B, T, in)
    state.set(coef)
    got = layer(x)  # (B, T, out)
    assert got.shape == (4, 3, d_out)
    for row in range(4):
        merged = w0.clone()
        for k in range(3):
            merged += coef[row, k] * scales[k] * (b_k[k] @ a_k[k])
        torch.testing.assert_close(got[row], _linear(merged, b0)(x[row]), atol=1e-5, rtol=1e-5)


def test_a_new_mixture_is_seen_by_the_next_forward():
    g = torch.Generator().manual_seed(1)
    w0, a, b = torch.randn(3, 4, generator=g), torch.randn(2, 4, generator=g), torch.randn(3, 2, generator=g)
    state = MixtureState(1, torch.device("cpu"))
    layer = MixtureLinear(_linear(w0, None), a, b, torch.tensor([0, 0]), state)
    x = torch.randn(1, 2, 4, generator=g)
    for c in (0.0, 1.0, 0.3):
        state.set(torch.tensor([[c]]))
        torch.testing.assert_close(layer(x)[0], _linear(w0 + c * b @ a, None)(x[0]), atol=1e-5, rtol=1e-5)


def test_a_model_with_batched_lora_equals_peft_merged_models_row_by_row(tiny_root):
    """Every adapted layer of the tiny Llama, with rank_pattern, alpha_pattern and rsLoRA experts: row b's
    logits equal those of the model holding θ_0 + Σ_k c[b,k]·(θ_k − θ_0), θ_k merged by PEFT."""
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    names = ("add", "rev", "sort")
    base_ckpt = load_base(tiny_root / "base")
    experts = [load_task_vector(n, tiny_root / "experts" / n, base_ckpt) for n in names]
    theta0 = LlamaForCausalLM.from_pretrained(tiny_root / "base").state_dict()
    thetas = [
        PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(tiny_root / "base"), tiny_root / "experts" / n)
        .merge_and_unload()
        .state_dict()
        for n in names
    ]
    coef = torch.tensor([[0.2, 0.3, 0.5], [0.0, 1.0, 0.0], [0.6, 0.0, 0.4]])
    ids = torch.randint(3, 40, (3, 7), generator=torch.Generator().manual_seed(2))

    model = LlamaForCausalLM.from_pretrained(tiny_root / "base").eval()
    originals = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    with torch.no_grad(), BatchedLora(model, experts, torch.device("cpu")) as batched:
        assert any(isinstance(m, MixtureLinear) for m in model.modules())
        batched.state.set(coef)
        got = model(ids).logits  # (B, T, vocab)
    assert {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)} == originals  # removed on exit

    for row in range(len(coef)):
        merged = {
            k: v + sum(float(coef[row, i]) * (thetas[i][k] - v) for i in range(len(names))) for k, v in theta0.items()
        }
        ref = LlamaForCausalLM.from_pretrained(tiny_root / "base").eval()
        ref.load_state_dict(merged)
        with torch.no_grad():
            want = ref(ids[row : row + 1]).logits[0]
        torch.testing.assert_close(got[row], want, atol=1e-4, rtol=1e-4)
