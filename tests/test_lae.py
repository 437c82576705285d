"""The linear autoencoder for sequences: maths against brute force on small data, solvers, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lapmusic.core.errors import CheckpointError, DeviceError, LapMusicError, SolverError
from lapmusic.lae import fit as lae
from lapmusic.lae.autoencoder import LinearAutoencoder
from lapmusic.lae.fit import fit_lae
from lapmusic.lae.xi import active_keys, build_xi, resolve_max_lag, xi_energy
from lapmusic.lae.xi_operator import XiOperator


def rolls(n, lengths, seed=0, density=0.08, keys=88):
    """``n`` random binary pieces, lengths drawn from ``lengths`` (inclusive range), notes on ``keys`` keys."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        T = int(rng.integers(lengths[0], lengths[1] + 1))
        roll = np.zeros((T, 88), dtype=np.uint8)
        roll[:, :keys] = rng.random((T, keys)) < density
        out.append(roll)
    return out


def rank_of(matrix):
    return int(np.linalg.matrix_rank(matrix))


def brute_force_u(pieces, max_lag=None):
    """Right singular vectors and singular values of the full 88-column Xi, by numpy."""
    xi = build_xi(pieces, max_lag)
    _, s, vt = np.linalg.svd(xi, full_matrices=False)
    return xi, vt.T, s


def match_signs(reference, other):
    """Signs s (one per column) with other ~ reference * s."""
    return np.sign(np.sum(reference * other, axis=0))


# ------------------------------------------------------------------------------------------ Xi
def test_build_xi_rows_are_reversed_prefixes():
    a = np.zeros((3, 88), dtype=np.uint8)
    a[0, 0] = a[1, 1] = a[2, 2] = 1
    b = np.zeros((2, 88), dtype=np.uint8)
    b[0, 5] = b[1, 6] = 1
    xi = build_xi([a, b])
    assert xi.shape == (5, 3 * 88)
    expected = np.zeros((5, 3 * 88))
    expected[0, 0] = 1                                    # a, t=1: [x1]
    expected[1, 1] = expected[1, 88 + 0] = 1              # a, t=2: [x2, x1]
    expected[2, 2] = expected[2, 88 + 1] = expected[2, 176 + 0] = 1
    expected[3, 5] = 1                                    # b, t=1
    expected[4, 6] = expected[4, 88 + 5] = 1              # b, t=2
    np.testing.assert_array_equal(xi, expected)
    # max_lag keeps only the most recent frames
    np.testing.assert_array_equal(build_xi([a, b], max_lag=2), expected[:, :176])


def test_energy_matches_brute_force():
    pieces = rolls(7, (2, 15), seed=1)
    for max_lag in (None, 1, 4):
        lags = resolve_max_lag(pieces, max_lag)
        assert xi_energy(pieces, lags) == pytest.approx(np.sum(build_xi(pieces, max_lag) ** 2))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("max_lag", [None, 5])
def test_operator_products_match_dense_xi(dtype, max_lag):
    pieces = rolls(23, (2, 40), seed=2, keys=60)
    lags = resolve_max_lag(pieces, max_lag)
    keys = active_keys(pieces)
    xi = build_xi(pieces, lags, keys=keys)
    # Short segments give many lag partitions; a tiny budget forces several column passes.
    op = XiOperator(pieces, keys, lags, device=torch.device("cpu"), dtype=dtype, columns=6,
                        chunk_bytes=60_000, segment=4)
    assert op.columns_per_pass < 6 and op.partitions == -(-lags // 4) > 1
    rng = np.random.default_rng(0)
    W = rng.standard_normal((xi.shape[1], 6))
    Y = rng.standard_normal((xi.shape[0], 6))
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    forward = op.matmul(torch.tensor(W, dtype=dtype)).double().numpy()
    adjoint = op.rmatmul(torch.tensor(Y, dtype=dtype)).double().numpy()
    assert np.abs(forward - xi @ W).max() <= tol * np.abs(xi @ W).max()
    assert np.abs(adjoint - xi.T @ Y).max() <= tol * np.abs(xi.T @ Y).max()


# ------------------------------------------------------------------------------------------ exact, p = rank
@pytest.fixture(scope="module")
def small_full_rank():
    """Pieces whose Xi has rank below both of its sides, and the exact LAE at p = rank."""
    pieces = rolls(9, (2, 7), seed=3, density=0.15, keys=12)
    xi, U, s = brute_force_u(pieces)
    rank = rank_of(xi)
    model = fit_lae(pieces, rank, solver="exact")
    return pieces, xi, U, s, rank, model


def test_exact_states_equal_xi_u_and_decoding_is_exact(small_full_rank):
    pieces, xi, U, s, rank, model = small_full_rank
    assert model.A.shape == (rank, 88) and model.B.shape == (rank, rank)
    states = np.concatenate(model.encode(pieces))  # (N, p)
    reference = xi @ U[:, :rank]
    signs = match_signs(reference, states)
    np.testing.assert_allclose(states, reference * signs, atol=1e-9)
    for piece, piece_states in zip(pieces, model.encode(pieces)):
        decoded = model.decode(piece_states[-1], piece.shape[0])
        assert np.abs(decoded - piece).max() < 1e-8
    np.testing.assert_allclose(model.singular_values[:rank], s[:rank], rtol=1e-10)
    assert model.energy_captured == pytest.approx(1.0, abs=1e-10)
    assert model.energy_per_component.sum() == pytest.approx(1.0, abs=1e-10)


def test_unrolled_encoder_identity_at_full_rank(small_full_rank):
    pieces, xi, U, s, rank, model = small_full_rank
    signs = match_signs(xi @ U[:, :rank], np.concatenate(model.encode(pieces)))
    blocks = (U[:, :rank] * signs).reshape(-1, 88, rank)  # U^(k): (88, p)
    power = np.eye(rank)
    for k in range(blocks.shape[0]):
        np.testing.assert_allclose(power @ model.A, blocks[k].T, atol=1e-9)
        power = model.B @ power


@pytest.mark.parametrize("solver", ["exact", "approx"])
def test_b_is_a_contraction_for_every_p(solver):
    pieces = rolls(6, (3, 9), seed=4, keys=20)
    for p in (1, 3, 10, 25):
        model = fit_lae(pieces, p, solver=solver, device="cpu")
        assert np.linalg.norm(model.B, 2) <= 1 + 1e-10
        assert np.all(np.diff(model.singular_values) <= 1e-9)


def test_approx_in_float64_equals_exact_at_full_rank(small_full_rank):
    pieces, xi, U, s, rank, exact = small_full_rank
    approx = fit_lae(pieces, rank, solver="approx", dtype="float64", seed=7, device="cpu")
    np.testing.assert_allclose(approx.singular_values, exact.singular_values[:rank], rtol=1e-9)
    signs = match_signs(exact.A.T, approx.A.T)
    np.testing.assert_allclose(approx.A, exact.A * signs[:, None], atol=1e-8)
    np.testing.assert_allclose(approx.B, exact.B * np.outer(signs, signs), atol=1e-8)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_approx_converges_to_exact_top_singular_values(dtype):
    # Structured pieces (repeated motifs) have a decaying spectrum like music does.
    rng = np.random.default_rng(5)
    motifs = [(rng.random((4, 88)) < 0.1).astype(np.uint8) for _ in range(6)]
    pieces = [np.concatenate([motifs[i] for i in rng.integers(0, 6, size=int(rng.integers(2, 8)))])
              for _ in range(30)]
    exact = fit_lae(pieces, 16, solver="exact")
    approx = fit_lae(pieces, 16, solver="approx", dtype=None if dtype == "float32" else dtype, device="cpu")
    assert approx.dtype == dtype and approx.device == "cpu"
    rel = np.abs(approx.singular_values[:16] - exact.singular_values[:16]) / exact.singular_values[:16]
    assert rel.max() < 1e-3
    assert approx.energy_captured == pytest.approx(exact.energy_captured, rel=1e-3)


def test_max_lag_limits_columns_and_keeps_states_exact():
    pieces = rolls(5, (6, 12), seed=6, keys=10, density=0.2)
    xi = build_xi(pieces, 3)
    rank = rank_of(xi)
    model = fit_lae(pieces, rank, solver="exact", max_lag=3)
    assert model.columns == 3 * 88 and model.max_lag == 3
    _, s, vt = np.linalg.svd(xi, full_matrices=False)
    states = np.concatenate(model.encode(pieces))
    reference = xi @ vt[:rank].T
    np.testing.assert_allclose(states, reference * match_signs(reference, states), atol=1e-9)
    # a lag longer than every piece is clamped
    assert fit_lae(pieces, 2, solver="exact", max_lag=10_000).max_lag == max(len(x) for x in pieces)


def weighted_xi_by_hand(pieces, lags, gamma):
    """Xi_gamma built row by row: row t = [x_t, gamma x_{t-1}, gamma^2 x_{t-2}, ...] (L blocks of 88)."""
    rows = []
    for x in pieces:
        for t in range(len(x)):
            row = np.zeros(lags * 88)
            for k in range(min(lags, t + 1)):
                row[k * 88:(k + 1) * 88] = gamma**k * x[t - k]
            rows.append(row)
    return np.array(rows)


@pytest.mark.parametrize("lags", [4, None])
def test_lag_decay_matches_a_dense_solve_of_the_weighted_xi(lags):
    gamma = 0.6
    pieces = rolls(5, (6, 12), seed=8, keys=10, density=0.2)
    L = lags or max(len(x) for x in pieces)
    xi = weighted_xi_by_hand(pieces, L, gamma)
    np.testing.assert_allclose(build_xi(pieces, L, decay=gamma), xi)
    _, s, vt = np.linalg.svd(xi, full_matrices=False)
    rank = rank_of(xi)
    # Full rank: the recursion y_t = A x_t + B y_{t-1} with B = gamma * sum U^(i+1)^T U^(i) gives Xi_gamma U.
    model = fit_lae(pieces, rank, solver="exact", max_lag=lags, decay=gamma)
    assert model.decay == gamma
    assert model.total_energy == pytest.approx((xi**2).sum(), rel=1e-12)
    np.testing.assert_allclose(model.singular_values[:rank], s[:rank], rtol=1e-10)
    states = np.concatenate(model.encode(pieces))
    reference = xi @ vt[:rank].T
    np.testing.assert_allclose(states, reference * match_signs(reference, states), atol=1e-9)
    # p < rank: A and B are the brute-force formulas on the dense solve's top-p vectors (up to signs).
    p = 6
    small = fit_lae(pieces, p, solver="exact", max_lag=lags, decay=gamma)
    blocks = vt[:p].T.reshape(L, 88, p)
    A = blocks[0].T
    B = gamma * sum(blocks[k + 1].T @ blocks[k] for k in range(L - 1))
    signs = match_signs(A.T, small.A.T)
    np.testing.assert_allclose(small.A, A * signs[:, None], atol=1e-9)
    np.testing.assert_allclose(small.B, B * np.outer(signs, signs), atol=1e-9)
    assert np.abs(np.linalg.eigvals(small.B)).max() <= gamma + 1e-9  # ||B|| <= gamma: memory fades
    # The randomized solver applies the same weights through its FFT products (exact at full rank).
    approx = fit_lae(pieces, rank, solver="approx", max_lag=lags, decay=gamma, dtype="float64", seed=3)
    np.testing.assert_allclose(approx.singular_values, s[:rank], rtol=1e-9)
    np.testing.assert_allclose(np.abs(approx.B), np.abs(model.B), atol=1e-8)


def test_lag_decay_is_saved_and_refused_outside_0_1(tmp_path):
    pieces = rolls(4, (5, 8), seed=9, keys=10, density=0.2)
    model = fit_lae(pieces, 3, solver="exact", decay=0.8)
    model.save(tmp_path / "lae.npz")
    assert LinearAutoencoder.load(tmp_path / "lae.npz").decay == 0.8
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(SolverError, match="decay"):
            fit_lae(pieces, 3, solver="exact", decay=bad)


def test_progress_is_reported_and_reaches_one():
    pieces = rolls(4, (3, 8), seed=8)
    for solver in ("exact", "gram", "approx"):
        seen = []
        fit_lae(pieces, 3, solver=solver, device="cpu", progress=lambda f, m: seen.append((f, m)))
        fractions = [f for f, _ in seen]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0 and all(0 <= f <= 1 for f in fractions)
        assert all(isinstance(m, str) and m for _, m in seen)


@pytest.mark.parametrize("solver", ["approx", "gram"])
def test_cancel_stops_the_approx_and_gram_solvers(solver):
    class Done:
        def is_set(self):
            return True

    with pytest.raises(LapMusicError, match="cancelled"):
        fit_lae(rolls(4, (3, 8)), 3, solver=solver, device="cpu", cancel=Done())


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "seqs, match",
    [
        ([], "no training pieces"),
        ([np.zeros((0, 88), np.uint8)], "piece 0 has 0 frame"),
        ([np.ones((5, 88), np.uint8), np.ones((1, 88), np.uint8)], "piece 1 has 1 frame"),
        ([np.ones((5, 87), np.uint8)], r"shape \(5, 87\)"),
        ([np.ones(5, np.uint8)], r"shape \(5,\)"),
        ([np.full((4, 88), 2, np.uint8)], "not binary"),
        ([np.full((4, 88), 0.5)], "not binary"),
        ([np.full((4, 88), np.nan)], "not binary"),
        (np.ones((4, 88), np.uint8), "not a single array"),
        ([np.zeros((4, 88), np.uint8)], "silent"),
    ],
)
def test_bad_pieces_are_refused_with_a_clear_message(seqs, match):
    with pytest.raises(LapMusicError, match=match):
        fit_lae(seqs, 2, solver="exact")


def test_bad_settings_are_refused():
    pieces = rolls(3, (3, 5), seed=9)
    for p in (0, -1, 2.5, True):
        with pytest.raises(SolverError, match="positive integer"):
            fit_lae(pieces, p)
    with pytest.raises(SolverError, match="unknown solver"):
        fit_lae(pieces, 2, solver="magic")
    with pytest.raises(SolverError, match="max_lag"):
        fit_lae(pieces, 2, max_lag=0)
    rows = sum(len(x) for x in pieces)
    with pytest.raises(SolverError, match=f"p <= {rows}"):
        fit_lae(pieces, rows + 1)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            fit_lae(pieces, 2, device="cuda")


@pytest.mark.parametrize("solver", ["exact", "approx"])
def test_p_above_the_numerical_rank_is_refused(solver):
    piece = rolls(1, (4, 4), seed=10, density=0.3)[0]
    pieces = [piece, piece.copy(), piece.copy()]  # 12 rows but rank 4
    assert rank_of(build_xi(pieces)) == 4
    with pytest.raises(SolverError, match="rank 4"):
        fit_lae(pieces, 6, solver=solver, device="cpu", dtype="float64" if solver == "approx" else None)
    assert fit_lae(pieces, 4, solver=solver, device="cpu").p == 4


def test_exact_refuses_before_allocating(monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("Xi must not be built when it does not fit")

    monkeypatch.setattr(lae, "build_xi", no_build)
    pieces = rolls(10, (20, 30), seed=11)
    with pytest.raises(SolverError, match=r"would need about \d+ MiB .*, over the memory budget of .*; use the approx solver"):
        fit_lae(pieces, 4, solver="exact", memory_budget_bytes=10_000)


# ------------------------------------------------------------------------------------------ persistence
def test_save_load_round_trip(tmp_path):
    pieces = rolls(5, (3, 10), seed=12)
    model = fit_lae(pieces, 4, solver="exact")
    path = tmp_path / "sub" / "lae.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as data:
        assert data["A"].shape == (4, 88) and data["B"].shape == (4, 4)
        assert np.all(np.diff(data["singular_values"]) <= 0)
    loaded = LinearAutoencoder.load(path)
    np.testing.assert_array_equal(loaded.A, model.A)
    np.testing.assert_array_equal(loaded.B, model.B)
    np.testing.assert_array_equal(loaded.singular_values, model.singular_values)
    assert loaded.summary() == model.summary()
    assert [p.name for p in path.parent.iterdir()] == ["lae.npz"]  # no temp file left behind


def test_load_refuses_foreign_or_broken_files(tmp_path):
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, A=np.zeros((2, 88)))
    with pytest.raises(CheckpointError, match="not a lapmusic LAE"):
        LinearAutoencoder.load(foreign)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="cannot read LAE file"):
        LinearAutoencoder.load(broken)
    with pytest.raises(CheckpointError, match="does not exist; fit one with `lapmusic lae --out FILE`"):
        LinearAutoencoder.load(tmp_path / "missing.npz")


def test_summary_is_json_ready():
    import json

    model = fit_lae(rolls(4, (3, 8), seed=13), 3, device="cpu")
    summary = json.loads(json.dumps(model.summary()))
    assert summary["solver"] == "gram" and summary["p"] == 3  # "auto" on 88 x 8 columns, and the summary says so
    assert 0 < summary["energy_captured"] <= 1
    assert summary["top_singular_values"] == sorted(summary["top_singular_values"], reverse=True)


def test_decode_validates_its_state():
    model = fit_lae(rolls(4, (3, 8), seed=14), 3, solver="exact")
    with pytest.raises(LapMusicError, match="shape"):
        model.decode(np.zeros(4), 2)
    assert model.decode(np.zeros(3), 0).shape == (0, 88)


# ------------------------------------------------------------------------------------------ real data
def _reconstruction_error(model, pieces):
    """Mean squared error of every piece decoded from its final state (the autoencoder's own error)."""
    total, count = 0.0, 0
    for piece, states in zip(pieces, model.encode(pieces)):
        decoded = model.decode(states[-1], piece.shape[0])
        total += float(np.sum((decoded - piece) ** 2))
        count += piece.size
    return total / count


@pytest.mark.realdata
def test_approx_matches_exact_on_10_jsb_pieces(real_data_dir):
    import scipy.io

    pieces = list(scipy.io.loadmat(real_data_dir / "JSB_Chorales.mat")["traindata"][0][:10])
    p = 64
    exact = fit_lae(pieces, p, solver="exact")
    approx = fit_lae(pieces, p, solver="approx", device="cpu")
    rel = np.abs(approx.singular_values[:p] - exact.singular_values[:p]) / exact.singular_values[:p]
    assert rel.max() < 0.01
    err_exact, err_approx = _reconstruction_error(exact, pieces), _reconstruction_error(approx, pieces)
    assert abs(err_approx - err_exact) <= 0.02 * err_exact
