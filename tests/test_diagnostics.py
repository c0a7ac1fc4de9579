import numpy as np
import pytest
import torch

from mixlab.checkpoint import load_base
from mixlab.diagnostics import interference, layer_of, sign_conflicts
from mixlab.experts import load_task_vector


def test_sign_conflicts_by_hand():
    a = torch.tensor([1.0, -1.0, 0.0, 2.0, 0.0])
    b = torch.tensor([2.0, 1.0, 3.0, 0.0, 0.0])
    c = torch.tensor([0.0, 0.0, -1.0, 0.0, 0.0])
    # entries with ≥2 non-zero: 0 (agree), 1 (conflict), 2 (conflict) → 3 overlapping, 2 conflicting
    assert sign_conflicts([a, b, c]) == (3, 2)


def test_layer_names():
    assert layer_of("model.layers.12.mlp.up_proj.weight") == "layer 12"
    assert layer_of("lm_head.weight") == "lm_head"


def test_interference_matches_numpy(tiny_root):
    base = load_base(tiny_root / "base")
    experts = [load_task_vector(n, tiny_root / "experts" / n, base) for n in ("add", "rev", "sort")]
    d = interference(experts)
    keys = base.keys()
    flat = [
        np.concatenate(
            [(e.delta(k) if e.delta(k) is not None else torch.zeros(base.shape(k))).reshape(-1).numpy() for k in keys]
        )
        for e in experts
    ]
    for i in range(3):
        for j in range(3):
            want = flat[i] @ flat[j] / (np.linalg.norm(flat[i]) * np.linalg.norm(flat[j]))
            assert d["cosine"].iloc[i, j] == pytest.approx(want, rel=1e-5, abs=1e-7)
    total = np.sqrt((d["norms"] ** 2).sum(axis=1))
    np.testing.assert_allclose(total.to_numpy(), [np.linalg.norm(f) for f in flat], rtol=1e-5)
    assert ((d["conflicts"].conflict_fraction.dropna() >= 0) & (d["conflicts"].conflict_fraction.dropna() <= 1)).all()


def test_sign_conflict_chance_by_hand_and_by_simulation():
    from mixlab.diagnostics import sign_conflicts_and_chance

    a = torch.tensor([1.0, -1.0, 0.0, 2.0, 0.0])
    b = torch.tensor([2.0, 1.0, 3.0, 0.0, 0.0])
    c = torch.tensor([0.0, 0.0, -1.0, 0.0, 0.0])
    # overlapping entries 0, 1, 2 with m = 2, 2, 2 experts non-zero: chance 3 × (1 − 2·0.5²) = 1.5
    assert sign_conflicts_and_chance([a, b, c]) == (3, 2, pytest.approx(1.5))
    d = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])  # now m = 3, 3, 3, 2: 3·0.75 + 0.5
    assert sign_conflicts_and_chance([a, b, c, d])[2] == pytest.approx(2.75)
    # fair-coin signs, all K non-zero: the observed fraction is chance, 1 − 2·0.5^K, within 4 σ
    g = torch.Generator().manual_seed(0)
    for k in (2, 3, 5):
        deltas = [torch.randn(200_000, generator=g) for _ in range(k)]
        both, bad, chance = sign_conflicts_and_chance(deltas)
        p = 1 - 2 * 0.5**k
        assert chance / both == pytest.approx(p) and abs(bad / both - p) < 4 * np.sqrt(p * (1 - p) / both)


def test_cosine_chance_covers_95_percent_of_random_pairs():
    from mixlab.diagnostics import cosine_chance

    rng = np.random.default_rng(0)
    d = 4096
    x, y = rng.normal(size=(2, 2000, d))
    cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    inside = np.mean(np.abs(cos) < cosine_chance(d))
    assert cosine_chance(d) == pytest.approx(1.959964 / 64) and 0.93 < inside < 0.97


def test_the_experts_pages_measured_reference_holds_in_demo_k3():
    """The Experts page says two LoRA runs on the same task (demo-k3's rev expert and its true rev100 run)
    have cosine 0.094, 15× chance: measured here with numpy on the flattened task vectors."""
    from mixlab.demo import DEMO_LAB
    from mixlab.diagnostics import cosine_chance

    root = DEMO_LAB
    base = load_base(root / "base")
    rev, again = (load_task_vector(n, root / p, base) for n, p in (("r", "experts/rev"), ("t", "true/rev100")))
    flat = [np.concatenate([(e.delta(k) if e.delta(k) is not None else torch.zeros(base.shape(k))).reshape(-1).numpy()
                            for k in base.keys()]) for e in (rev, again)]  # fmt: skip
    cos = flat[0] @ flat[1] / (np.linalg.norm(flat[0]) * np.linalg.norm(flat[1]))
    assert f"{cos:.3f}" == "0.094" and cos > 15 * cosine_chance(len(flat[0]))
