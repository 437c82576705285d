"""The RNN, its LAE initialisation and the readout fit, checked against brute force on tiny data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_rolls
from scipy.optimize import minimize

from lapmusic.core.errors import LapMusicError
from lapmusic.model.chordvocab import ChordVocabNADE
from lapmusic.model.config import ModelConfig
from lapmusic.model.head import BernoulliHead
from lapmusic.model.lae_init import choose_alpha, collect_states, fit_readout, init_from_lae
from lapmusic.model.nade import NADEOutput
from lapmusic.model.repeatmix import RepeatChordVocabNADE, RepeatNADE
from lapmusic.model.rnn import PianoRollRNN

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def brute_force_lae(seqs, p=None):
    """The LAE by its definition: SVD of the reversed-prefix matrix Xi (rows [x_t, x_{t-1}, ..., x_1, 0...]).

    Returns (A, B, states) with states = Xi U_p, the LAE states by definition (row blocks per piece).
    With p = rank(Xi) the recursion y_t = A x_t + B y_{t-1} reproduces them exactly.
    """
    keys = seqs[0].shape[1]
    lags = max(len(s) for s in seqs)
    rows = []
    for seq in seqs:
        for t in range(len(seq)):
            row = np.zeros(keys * lags)
            prefix = seq[t::-1].astype(float)  # x_t, x_{t-1}, ..., x_1
            row[: prefix.size] = prefix.reshape(-1)
            rows.append(row)
    xi = np.array(rows)
    _, singular, vt = np.linalg.svd(xi, full_matrices=False)
    rank = int((singular > 1e-9 * singular[0]).sum())
    p = rank if p is None else p
    U = vt[:p].T  # (keys * lags, p)
    shift = np.eye(keys * lags, k=keys)  # a row times shift = the row moved right by one block
    A = U[:keys].T
    B = U.T @ shift.T @ U
    return A, B, xi @ U


class RecursionLAE:
    """A duck-typed LAE (A, B, encode) for tests."""

    def __init__(self, A, B, mean=None):
        self.A, self.B = A, B
        if mean is not None:
            self.mean = mean

    def encode(self, seqs):
        out = []
        for seq in seqs:
            y = np.zeros(self.A.shape[0])
            states = []
            for x in np.asarray(seq, dtype=float):
                x = x - getattr(self, "mean", 0.0)
                y = self.A @ x + self.B @ y
                states.append(y)
            out.append(np.array(states))
        return out


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_forward_shapes_and_stepwise_state_carry(cell):
    torch.manual_seed(0)
    model = PianoRollRNN.from_config(ModelConfig(8, cell=cell)).eval()
    x = torch.as_tensor(np.stack(random_rolls(2, 9, seed=1)), dtype=torch.float32)
    logits, h = model(x)
    assert logits.shape == (2, 9, 88)
    # The sampler feeds one frame at a time and carries the state: same logits as the whole sequence.
    state, steps = None, []
    for t in range(9):
        step, state = model(x[:, t : t + 1], state)
        steps.append(step)
    assert torch.allclose(torch.cat(steps, dim=1), logits, atol=1e-5)
    final = h if cell != "lstm" else h[0]
    assert final.shape == (1, 2, 8)


def test_bad_cell_and_bad_lae_shapes_are_refused():
    with pytest.raises(LapMusicError, match=r"invalid model config: cell must be one of \['rnn', 'gru', 'lstm'\]"):
        PianoRollRNN.from_config(ModelConfig(4, cell="transformer"))
    model = PianoRollRNN.from_config(ModelConfig(4))
    with pytest.raises(ValueError, match="p = hidden"):
        init_from_lae(model, RecursionLAE(np.zeros((5, 88)), np.zeros((5, 5))), alpha=0.1)
    with pytest.raises(ValueError, match="Elman"):
        init_from_lae(PianoRollRNN.from_config(ModelConfig(4, cell="gru")),
                      RecursionLAE(np.zeros((4, 88)), np.zeros((4, 4))), 0.1)


def test_brute_force_lae_helper_is_an_exact_autoencoder():
    # Guards the test helper itself: at full rank the recursion reproduces Xi U exactly.
    seqs = random_rolls(3, (4, 6), seed=2, density=0.2)
    A, B, states = brute_force_lae(seqs)
    recursion = np.concatenate(RecursionLAE(A, B).encode(seqs))
    assert np.allclose(recursion, states, atol=1e-9)


def _rnn_states(model, seqs):
    with torch.no_grad():
        return [model.hidden_states(torch.as_tensor(s, dtype=torch.float32)[None])[0][0].double().numpy()
                for s in seqs]


def test_lae_init_reproduces_lae_states_when_alpha_is_small():
    seqs = random_rolls(3, (4, 6), seed=3, density=0.2)
    A, B, states = brute_force_lae(seqs)
    model = PianoRollRNN.from_config(ModelConfig(A.shape[0]))
    alpha = 1e-3
    init_from_lae(model, RecursionLAE(A, B), alpha)
    rnn = np.concatenate(_rnn_states(model, seqs)) / alpha
    # tanh(a) = a (1 - a^2/3 + ...): relative error ~ (alpha |y|)^2 / 3, about 1e-6 here (plus float32).
    assert np.allclose(rnn, states, rtol=1e-3, atol=1e-4 * np.abs(states).max())
    # Not vacuous: with a large alpha, tanh saturates and the states no longer match.
    init_from_lae(model, RecursionLAE(A, B), 3.0)
    saturated = np.concatenate(_rnn_states(model, seqs)) / 3.0
    assert np.abs(saturated - states).max() > 0.1 * np.abs(states).max()


def test_lae_init_with_centring_uses_the_hidden_bias():
    rng = np.random.default_rng(4)
    p = 6
    A = rng.normal(size=(p, 88)) / 5
    B = 0.8 * np.linalg.qr(rng.normal(size=(p, p)))[0]
    mean = rng.uniform(0, 0.2, size=88)
    lae = RecursionLAE(A, B, mean=mean)
    seqs = random_rolls(2, 7, seed=5)
    model = PianoRollRNN.from_config(ModelConfig(p))
    init_from_lae(model, lae, 1e-3)
    rnn = np.concatenate(_rnn_states(model, seqs)) / 1e-3
    expected = np.concatenate(lae.encode(seqs))
    assert np.allclose(rnn, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


def test_lae_init_from_the_library_lae():
    from lapmusic.lae.fit import fit_lae

    seqs = random_rolls(4, (5, 8), seed=6, density=0.2)
    lae = fit_lae(seqs, 10, solver="exact")
    model = PianoRollRNN.from_config(ModelConfig(10))
    init_from_lae(model, lae, 1e-3)
    rnn = np.concatenate(_rnn_states(model, seqs)) / 1e-3
    expected = np.concatenate(lae.encode(seqs))
    assert np.allclose(rnn, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


def test_choose_alpha_puts_the_quantile_at_the_target():
    rng = np.random.default_rng(7)
    p = 5
    lae = RecursionLAE(rng.normal(size=(p, 88)), 0.5 * np.eye(p))
    seqs = random_rolls(5, 20, seed=8)
    alpha = choose_alpha(lae, seqs, target=0.5, quantile=0.99)
    scaled = alpha * np.abs(np.concatenate(lae.encode(seqs)))
    assert np.quantile(scaled, 0.99) == pytest.approx(0.5)


def _logistic_loss(H, Y, W, c):
    z = H @ W.T + c
    return float((np.logaddexp(0, z) - Y * z).sum(1).mean())


def test_readout_least_squares_is_the_first_newton_step():
    rng = np.random.default_rng(9)
    H = rng.normal(size=(400, 3))
    truth = rng.normal(size=(2, 3))
    Y = (rng.random((400, 2)) < 1 / (1 + np.exp(-(H @ truth.T)))).astype(float)
    W, c = fit_readout(torch.tensor(H), torch.tensor(Y, dtype=torch.float32), logistic_steps=0, ridge=0.0)
    # By hand: working response z = logit(m) + (y - m) / (m (1 - m)) regressed on [H, 1] by least squares.
    m = Y.mean(0)
    z = np.log(m / (1 - m)) + (Y - m) / (m * (1 - m))
    design = np.hstack([H, np.ones((400, 1))])
    solution = np.linalg.lstsq(design, z, rcond=None)[0]
    # The step is kept whole when it lowers the loss (it does here: the data follow a logistic model).
    assert np.allclose(W.numpy(), solution[:-1].T, atol=1e-4)
    assert np.allclose(c.numpy(), solution[-1], atol=1e-4)
    constant = _logistic_loss(H, Y, np.zeros((2, 3)), np.log(m / (1 - m)))
    assert _logistic_loss(H, Y, W.double().numpy(), c.double().numpy()) < constant


def test_readout_logistic_refinement_reaches_the_optimum():
    rng = np.random.default_rng(10)
    H = rng.normal(size=(300, 4))
    Y = (rng.random((300, 3)) < 1 / (1 + np.exp(-(H @ rng.normal(size=(3, 4)).T + 0.5)))).astype(float)
    for ridge in (0.0, 0.05):
        W, c = fit_readout(torch.tensor(H, dtype=torch.float32), torch.tensor(Y, dtype=torch.float32),
                           logistic_steps=100, ridge=ridge)
        # The ridge of the least-squares step, per frame: ridge * trace([H,1]^T [H,1]) / (p + 1) / N.
        penalty = ridge * ((H**2).sum() + len(H)) / 5 / len(H)

        def objective(flat):
            return _logistic_loss(H, Y, flat[:12].reshape(3, 4), flat[12:]) + penalty * (flat[:12] ** 2).sum()

        ours = objective(np.concatenate([W.double().numpy().ravel(), c.double().numpy()]))
        best = minimize(objective, np.zeros(15), method="BFGS", options={"gtol": 1e-8}).fun
        assert ours == pytest.approx(best, abs=1e-4)


def test_readout_on_rnn_states_predicts_a_deterministic_pattern():
    # Frame t+1 repeats frame t one key up: a readout on good states should learn it from the LAE states.
    seqs = []
    for start in range(20, 40):
        roll = np.zeros((10, 88), dtype=np.uint8)
        roll[np.arange(10), start + np.arange(10)] = 1
        seqs.append(roll)
    A, B, _ = brute_force_lae(seqs[:3], p=None)
    model = PianoRollRNN.from_config(ModelConfig(A.shape[0]))
    init_from_lae(model, RecursionLAE(A, B), 0.05)
    H, Y = collect_states(model, seqs[:3])
    assert H.shape == (27, A.shape[0]) and Y.shape == (27, 88)
    W, c = fit_readout(H, Y, logistic_steps=50)
    model.head.set_readout(W, c)
    with torch.no_grad():
        logits, _ = model(torch.as_tensor(seqs[0][:-1], dtype=torch.float32)[None])
    predicted = (torch.sigmoid(logits[0]) >= 0.5).numpy()
    assert (predicted == seqs[0][1:].astype(bool)).mean() > 0.99


def test_lae_init_can_cap_the_spectral_radius_of_the_recurrent_weights():
    rng = np.random.default_rng(11)
    p = 6
    B = np.linalg.qr(rng.normal(size=(p, p)))[0]  # orthogonal: every eigenvalue on the unit circle
    lae = RecursionLAE(rng.normal(size=(p, 88)), B)
    model = PianoRollRNN.from_config(ModelConfig(p))
    init_from_lae(model, lae, 0.1, max_spectral_radius=0.9)
    radius = np.abs(np.linalg.eigvals(model.recurrent.weight_hh_l0.detach().double().numpy())).max()
    assert radius == pytest.approx(0.9, abs=1e-5)
    init_from_lae(model, lae, 0.1, max_spectral_radius=1.5)  # already below the cap: B unchanged
    assert np.allclose(model.recurrent.weight_hh_l0.detach().numpy(), B, atol=1e-6)


HEADS = [(ModelConfig(5), BernoulliHead), (ModelConfig(5, readout_skip=True), BernoulliHead),
         (ModelConfig(5, output="nade", nade_hidden=3, nade_skip=True), NADEOutput),
         (ModelConfig(5, output="nade", nade_hidden=3, nade_vocab=4), ChordVocabNADE),
         (ModelConfig(5, output="nade", nade_hidden=3, nade_repeat=True, nade_repeat_window=2), RepeatNADE),
         (ModelConfig(5, output="nade", nade_hidden=3, nade_vocab=4, nade_repeat=True), RepeatChordVocabNADE)]


@pytest.mark.parametrize("config, head_class", HEADS)
def test_from_config_builds_the_head_and_every_head_scores_frames(config, head_class):
    torch.manual_seed(0)
    model = PianoRollRNN.from_config(config).eval()
    assert type(model.head) is head_class and (model.hidden, model.cell, model.n_keys) == (5, "rnn", 88)
    x = torch.as_tensor(np.stack(random_rolls(2, 12, seed=4, density=0.2)), dtype=torch.float32)
    nll, _ = model.frame_nll(x[:, :-1], targets=x[:, 1:])
    assert nll.shape == (2, 11) and bool(torch.isfinite(nll).all()) and bool((nll > 0).all())
    states, _ = model.hidden_states(x[:, :-1])
    scores = model.head.metric_scores(states, x[:, 1:], x[:, :-1], None, samples=2, seed=0)
    if scores.get("nll") is not None:  # a frame mixture: its NLL per frame, no per-key logits
        assert torch.equal(scores["nll"], nll) and scores["logits"] is None
    else:
        per_key = torch.nn.functional.binary_cross_entropy_with_logits(scores["logits"], x[:, 1:], reduction="none")
        assert torch.allclose(per_key.sum(-1), nll)
    assert "ACC" in model.head.acc_method()


def test_from_config_names_every_problem():
    with pytest.raises(LapMusicError, match="invalid model config: nade_vocab needs output 'nade'; "
                                            "hidden must be an integer from 1 to 4,096, not 0"):
        PianoRollRNN.from_config(ModelConfig(0, nade_vocab=3))
    assert ModelConfig(4, output="nade", nade_repeat=True, nade_repeat_window=4).problems() == []


@pytest.mark.parametrize("config, old_keys", [
    (ModelConfig(5, readout_skip=True), {"readout.weight", "readout.bias", "skip.weight"}),
    (ModelConfig(5, output="nade", nade_hidden=3, nade_vocab=4, nade_repeat=True, nade_repeat_window=2),
     {"nade.W", "nade.V", "nade.visible_bias.weight", "nade.visible_bias.bias", "nade.hidden_bias.weight",
      "nade.hidden_bias.bias", "nade.gate.weight", "nade.gate.bias", "nade.chords", "nade.chord_logits.weight",
      "nade.chord_logits.bias", "nade.repeat_gate.weight", "nade.repeat_gate.bias", "nade.offset_logits.weight",
      "nade.offset_logits.bias"}),
])
def test_weights_saved_under_the_old_names_still_load(config, old_keys):
    """Run folders written before the output layers shared the name ``head`` keep ``readout.*``, ``skip.*`` and
    ``nade.*`` in their checkpoints."""
    torch.manual_seed(0)
    model = PianoRollRNN.from_config(config)
    old = {}
    for key, value in model.state_dict().items():
        for new, before in (("head.readout.", "readout."), ("head.skip.", "skip."), ("head.", "nade.")):
            if key.startswith(new):
                key = before + key[len(new):]
                break
        old[key] = value
    assert set(old) - {k for k in old if k.startswith("recurrent.")} == old_keys
    torch.manual_seed(1)
    fresh = PianoRollRNN.from_config(config)
    fresh.load_state_dict(old)
    assert all(torch.equal(value, fresh.state_dict()[key]) for key, value in model.state_dict().items())
