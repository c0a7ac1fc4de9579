import numpy as np
import pytest
import torch

from mixlab.diagnostics import interference, layer_of, sign_conflicts
from mixlab.experts import load_base, load_task_vector


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
