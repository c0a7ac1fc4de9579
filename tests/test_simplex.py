from math import comb

import numpy as np
import pytest

from mixlab.errors import MixlabError, MixtureWeightsError
from mixlab.simplex import (
    Mixture,
    dirichlet,
    grid_from_step,
    lattice,
    paper_grid,
    parse_weights,
    projected_xy,
    validate_weights,
)

NAMES = ["ocr", "chart", "math"]


@pytest.mark.parametrize(("k", "m"), [(2, 8), (3, 8), (3, 10), (4, 5), (5, 3)])
def test_lattice_has_all_points_of_step_1_over_m(k, m):
    pts = lattice(k, m)
    assert pts.shape == (comb(m + k - 1, k - 1), k)
    np.testing.assert_allclose(pts.sum(1), 1.0)
    assert len({tuple(np.round(p * m).astype(int)) for p in pts}) == len(pts)
    assert np.allclose(pts * m, np.round(pts * m)) and (pts >= 0).all()


def test_grid_from_step():
    assert len(grid_from_step(3, 0.1)) == 66
    with pytest.raises(MixtureWeightsError, match="grid step must be 1/m"):
        grid_from_step(3, 0.3)


def test_paper_presets():
    assert len(paper_grid(2)) == 9
    k3 = paper_grid(3)
    assert len(k3) == 22 and (k3[:21] >= 1 / 8 - 1e-12).all()
    np.testing.assert_allclose(k3[-1], [1 / 3] * 3)
    k4 = paper_grid(4, seed=1)
    assert k4.shape == (21, 4)
    np.testing.assert_allclose(k4, paper_grid(4, seed=1))
    np.testing.assert_allclose(k4.sum(1), 1.0)


def test_dirichlet_is_seeded():
    np.testing.assert_array_equal(dirichlet(3, 5, seed=7), dirichlet(3, 5, seed=7))
    assert not np.array_equal(dirichlet(3, 5, seed=7), dirichlet(3, 5, seed=8))


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True])
def test_a_seed_outside_what_numpy_takes_is_refused_with_the_range(seed):
    with pytest.raises(MixlabError, match=rf"seed must be a whole number from 0 to 4,294,967,295 .*got {seed!r}"):
        dirichlet(3, 5, seed=seed)


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([0.5, 0.6, 0.0], r"must sum to 1 \(±1.5e-06\), got Σ=1.1"),
        ([1.5, -0.5, 0.0], r"must be ≥ 0, got -0.5 in \[1.5, -0.5, 0.0\]"),
        ([float("nan"), 0.5, 0.5], "must be finite"),
        ([], "empty"),
    ],
)
def test_bad_weights_are_named(weights, match):
    with pytest.raises(MixtureWeightsError, match=match):
        validate_weights(weights)


def test_normalize_on_request():
    assert validate_weights([1, 1, 2], normalize=True) == [0.25, 0.25, 0.5]
    with pytest.raises(MixtureWeightsError, match="sum to 0"):
        validate_weights([0, 0], normalize=True)


def test_parse_positional_and_named():
    assert parse_weights("0.2,0.3,0.5", NAMES).weights == (0.2, 0.3, 0.5)
    assert parse_weights("chart=0.8, ocr=0.2", NAMES).as_dict() == {"ocr": 0.2, "chart": 0.8, "math": 0.0}
    for text, match in [
        ("ocr=0.5,tables=0.5", "unknown expert 'tables'"),
        ("0.5,0.5", "2 weights in '0.5,0.5' for 3 experts"),
        ("ocr=0.5,0.5", "mix of named and positional"),
        ("ocr=a", "weight 'a'"),
        ("ocr=0.5,ocr=0.5", "twice"),
    ]:
        with pytest.raises(MixtureWeightsError, match=match):
            parse_weights(text, NAMES)


def test_mixture_checks_its_length():
    with pytest.raises(MixtureWeightsError, match="2 weights for 3 experts"):
        Mixture(tuple(NAMES), (0.5, 0.5))


def test_ternary_and_projection_put_vertices_at_experts():
    v = projected_xy(np.eye(3))
    sides = [np.linalg.norm(v[i] - v[(i + 1) % 3]) for i in range(3)]
    np.testing.assert_allclose(sides, sides[0])
    np.testing.assert_allclose(projected_xy(np.full((1, 3), 1 / 3)), [[0.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(projected_xy(np.full((1, 5), 0.2)), [[0.0, 0.0]], atol=1e-12)


def test_grid_size_counts_the_lattice_without_building_it():
    from mixlab.simplex import grid_size, lattice

    for k, step in ((3, 0.1), (4, 0.2), (2, 0.5), (5, 0.25)):
        assert grid_size(k, step) == len(lattice(k, round(1 / step)))
    assert grid_size(12, 0.1) == 352_716
    for bad in (0, -0.1, float("nan"), float("inf"), 1.5, 0.3):
        with pytest.raises(MixtureWeightsError):
            grid_size(3, bad)


@pytest.mark.parametrize(
    ("weights", "i", "value", "want"),
    [
        ([0.2, 0.3, 0.5], 0, 0.6, [0.6, 0.4 * 0.375, 0.4 * 0.625]),  # the others keep their proportions
        ([1.0, 0.0, 0.0], 0, 0.4, [0.4, 0.3, 0.3]),  # all others 0: equal shares
        ([0.2, 0.3, 0.5], 2, 1.7, [0.0, 0.0, 1.0]),  # clipped to [0, 1]
        ([0.2, 0.3, 0.5], 1, -1.0, [0.2 / 0.7, 0.0, 0.5 / 0.7]),
    ],
)
def test_rebalance_keeps_the_mixture_on_the_simplex(weights, i, value, want):
    from mixlab.simplex import rebalance

    got = rebalance(weights, i, value)
    assert got == pytest.approx(want) and sum(got) == pytest.approx(1.0)


def test_weights_may_be_fractions():
    from mixlab.simplex import parse_weights

    m = parse_weights("1/3,1/3,1/3", ["a", "b", "c"])
    assert m.weights == pytest.approx([1 / 3] * 3)
    assert parse_weights("a=1/2,c=1/2", ["a", "b", "c"]).weights == pytest.approx([0.5, 0, 0.5])
    with pytest.raises(MixtureWeightsError, match="'1/0' in '1/0,1' is not a number"):
        parse_weights("1/0,1", ["a", "b"])


def test_separating_vertices_are_memoised_per_set_of_mixtures_and_returned_as_copies():
    from mixlab.simplex import lattice, separating_vertices

    w = lattice(4, 4)
    first = separating_vertices(w)
    first[:] = 0.0  # a caller's edit must not reach the memo
    again = separating_vertices(w[::-1])  # the same set in another order
    assert np.allclose((again**2).sum(1), 1.0) and not np.allclose(again, 0.0)
    np.testing.assert_array_equal(again, separating_vertices(w))


def test_a_mixture_written_to_six_decimals_reads_back_for_any_k():
    """Rounding each of K weights to 6 decimals can move Σw by K·5e-7: what mixlab writes must read back."""
    from mixlab.simplex import Mixture, tolerance

    rng = np.random.default_rng(0)
    for k in (3, 15, 40):
        for _ in range(200):
            w = [round(x, 6) for x in rng.dirichlet(np.ones(k))]
            assert Mixture.of([str(i) for i in range(k)], w).weights == tuple(w)
        assert tolerance(k) == max(1e-6, k * 5e-7)
    with pytest.raises(MixtureWeightsError, match="must sum to 1"):
        Mixture.of(["a", "b", "c"], [0.5, 0.5, 0.00001])
