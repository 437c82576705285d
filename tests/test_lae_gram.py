"""The Gram LAE solver against brute force: G = Xi^T Xi built without Xi, the exact solver's factors, "auto"."""

from __future__ import annotations

import numpy as np
import pytest

from lapmusic.core.errors import SolverError
from lapmusic.lae import fit as lae_fit
from lapmusic.lae.fit import choose_solver, fit_lae
from lapmusic.lae.gram import GRAM_MAX_COLUMNS, gram_svd, xi_gram
from lapmusic.lae.xi import active_keys, build_xi, validate_sequences


def rolls(lengths, seed=0, keys=16, density=0.2):
    """Random 0/1 pieces of the given lengths, notes on the first ``keys`` keys."""
    rng = np.random.default_rng(seed)
    out = []
    for T in lengths:
        roll = np.zeros((T, 88), dtype=np.uint8)
        roll[:, :keys] = rng.random((T, keys)) < density
        out.append(roll)
    return out


# ------------------------------------------------------------------------------------------ the Gram matrix
@pytest.mark.parametrize("gamma", [0.3, 0.7, 1.0])
@pytest.mark.parametrize("lags", [1, 2, 7, 13])
def test_gram_equals_xi_transposed_times_xi(gamma, lags):
    # lengths around and below L: pieces shorter than the lags, of exactly L and L - 1, and longer
    pieces = validate_sequences(rolls([2, 3, 5, 7, 12, 13, 20, 31], seed=lags))
    keys = active_keys(pieces)
    xi = build_xi(pieces, lags, keys=keys, decay=gamma)
    np.testing.assert_allclose(xi_gram(pieces, keys, lags, gamma), xi.T @ xi, rtol=0, atol=1e-10)


def test_gram_counts_in_float64_when_float32_could_not_hold_them(monkeypatch):
    from lapmusic.lae import gram as gram_module

    pieces = validate_sequences(rolls([4, 9, 17], seed=8))
    keys = active_keys(pieces)
    monkeypatch.setattr(gram_module, "FLOAT32_COUNTS", 10)  # as if the data had 2^24 frames or more
    xi = build_xi(pieces, 5, keys=keys, decay=0.7)
    np.testing.assert_allclose(xi_gram(pieces, keys, 5, 0.7), xi.T @ xi, rtol=0, atol=1e-12)


def test_gram_drops_what_the_last_row_does_not_see():
    # One piece x_0 = e_0, x_1 = e_1, L = 2: rows [x_0, 0] and [x_1, x_0]. Lag block 1 sees x_0 only, while the
    # full lag-0 product of the piece also holds x_1 x_1^T: the tail correction must remove it.
    piece = np.zeros((2, 88), dtype=np.uint8)
    piece[0, 0] = piece[1, 1] = 1
    gram = xi_gram([piece], np.array([0, 1]), 2)
    np.testing.assert_array_equal(gram[:2, :2], np.eye(2))          # lag 0: x_0 x_0^T + x_1 x_1^T
    np.testing.assert_array_equal(gram[2:, 2:], [[1, 0], [0, 0]])   # lag 1: x_0 x_0^T only
    np.testing.assert_array_equal(gram[:2, 2:], [[0, 0], [1, 0]])   # lags 0 x 1: x_1 x_0^T


# ------------------------------------------------------------------------------------------ the solver
@pytest.mark.parametrize("gamma", [0.3, 0.7, 1.0])
def test_gram_solver_gives_the_exact_solvers_lae(gamma):
    pieces = rolls([3, 5, 6, 9, 11, 14, 14, 20], seed=5, keys=12, density=0.25)
    lags, p = 6, 8
    exact = fit_lae(pieces, p, solver="exact", max_lag=lags, decay=gamma)
    gram = fit_lae(pieces, p, solver="gram", max_lag=lags, decay=gamma)
    assert (gram.solver, gram.dtype, gram.device) == ("gram", "float64", "cpu")
    # every singular value, to rounding relative to the largest (the smallest here is ~1e-4 of it at gamma = 0.3)
    assert gram.singular_values.shape == exact.singular_values.shape
    np.testing.assert_allclose(gram.singular_values, exact.singular_values, rtol=0,
                               atol=1e-12 * exact.singular_values[0])
    np.testing.assert_allclose(gram.singular_values[:p], exact.singular_values[:p], rtol=1e-10)
    assert gram.total_energy == exact.total_energy
    # the top p + 1 singular values are distinct, so A's rows (the vectors' first block) and B agree up to signs
    assert np.min(-np.diff(exact.singular_values[: p + 1])) > 1e-4 * exact.singular_values[0]
    signs = np.sign(np.sum(exact.A * gram.A, axis=1))
    np.testing.assert_allclose(gram.A * signs[:, None], exact.A, atol=1e-9)
    np.testing.assert_allclose(gram.B * np.outer(signs, signs), exact.B, atol=1e-9)


def test_gram_solver_spans_the_exact_subspace_at_repeated_singular_values():
    # Two identical pieces on disjoint keys: every singular value is double, so the vectors are defined up to a
    # rotation inside each pair; the top-p subspace is what must agree (principal angles' cosines all 1).
    one = rolls([9], seed=2, keys=6, density=0.4)[0]
    other = np.zeros_like(one)
    other[:, 40:46] = one[:, :6]
    pieces, p, lags = [one, other], 4, 4
    keys = active_keys(pieces)
    _, s, vt = np.linalg.svd(build_xi(pieces, lags, keys=keys, decay=0.7), full_matrices=False)
    assert s[0] - s[1] < 1e-12 * s[0] and s[p - 1] - s[p] > 1e-3 * s[0]  # pairs, the top p apart from the rest
    U, S = gram_svd(pieces, keys, lags, 0.7, lambda fraction, message: None)
    np.testing.assert_allclose(S, s, rtol=0, atol=1e-12 * s[0])
    np.testing.assert_allclose(U.T @ U, np.eye(U.shape[1]), atol=1e-12)
    cosines = np.linalg.svd(vt[:p] @ U[:, :p], compute_uv=False)
    np.testing.assert_allclose(cosines, np.ones(p), atol=1e-9)


def test_gram_solver_refuses_p_above_the_numerical_rank():
    piece = rolls([4], seed=10, density=0.3, keys=88)[0]
    pieces = [piece, piece.copy(), piece.copy()]  # 12 rows but rank 4
    assert np.linalg.matrix_rank(build_xi(pieces)) == 4
    with pytest.raises(SolverError, match="rank 4"):
        fit_lae(pieces, 6, solver="gram")
    assert fit_lae(pieces, 4, solver="gram").p == 4


# ------------------------------------------------------------------------------------------ "auto"
def test_auto_takes_gram_up_to_the_bound_and_approx_above():
    assert choose_solver("auto", GRAM_MAX_COLUMNS) == "gram"
    assert choose_solver("auto", GRAM_MAX_COLUMNS + 1) == "approx"
    assert [choose_solver(s, 10**6) for s in ("gram", "exact", "approx")] == ["gram", "exact", "approx"]
    with pytest.raises(SolverError, match="unknown solver 'magic'; choose one of auto, gram, exact, approx"):
        choose_solver("magic", 10)


def test_auto_records_the_solver_it_ran(monkeypatch):
    pieces = rolls([10, 12, 15], seed=3)  # 16 keys x 15 lags = 240 columns
    assert fit_lae(pieces, 4).solver == "gram"  # the default is "auto"
    monkeypatch.setattr(lae_fit, "GRAM_MAX_COLUMNS", 239)
    assert fit_lae(pieces, 4, device="cpu").solver == "approx"


@pytest.mark.realdata
def test_gram_matches_exact_on_jsb_pieces_with_the_training_weighting(real_data_dir):
    import scipy.io

    pieces = list(scipy.io.loadmat(real_data_dir / "JSB_Chorales.mat")["traindata"][0][:20])
    exact = fit_lae(pieces, 64, solver="exact", decay=0.3, max_lag=23)
    gram = fit_lae(pieces, 64, decay=0.3, max_lag=23)  # what a training run fits
    assert gram.solver == "gram"
    np.testing.assert_allclose(gram.singular_values[:64], exact.singular_values[:64], rtol=1e-10)
    signs = np.sign(np.sum(exact.A * gram.A, axis=1))
    np.testing.assert_allclose(gram.A * signs[:, None], exact.A, atol=1e-8)
    np.testing.assert_allclose(gram.B * np.outer(signs, signs), exact.B, atol=1e-8)
