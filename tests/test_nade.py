"""The NADE output (RNN-NADE): exact NLL against brute force, the parallel form against the key loop,
sampling frequencies against the model's probabilities, and a NADE run end to end through train()."""

from __future__ import annotations

import dataclasses
import itertools
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import random_rolls

from lapmusic.cli import main as cli
from lapmusic.core.errors import LapMusicError
from lapmusic.model.config import ModelConfig
from lapmusic.model.lae_init import collect_states, fit_readout
from lapmusic.model.nade import NADEOutput, metric_predictions
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.sampling.sample import generate
from lapmusic.training.config import TrainConfig
from lapmusic.training.results import evaluate, load_run
from lapmusic.training.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _all_frames(keys: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0, 1], repeat=keys)), dtype=torch.float64)


def _tiny_nade(keys=5, state=3, hidden=4, seed=0, skip=False) -> NADEOutput:
    torch.manual_seed(seed)
    nade = NADEOutput(state, keys, hidden, skip=skip).double()
    with torch.no_grad():
        for parameter in nade.parameters():
            parameter.normal_(0, 1.0)  # far from zero (the skip too) so the keys really depend on each other
    return nade


def _read_frames(shape, keys, seed=5) -> torch.Tensor:
    """Random 0/1 "previous frames" x for the skip (ignored by a NADE without it)."""
    return (torch.rand(*shape, keys, generator=torch.Generator().manual_seed(seed)) < 0.5).double()


def _textbook_biases(nade: NADEOutput, s: torch.Tensor, x: torch.Tensor):
    """b = W_bs s + b_0 (+ W_bx x), c = W_cs s + c_0 (+ W_cx x), written out from the weights."""
    b = s @ nade.visible_bias.weight.T + nade.visible_bias.bias
    c = s @ nade.hidden_bias.weight.T + nade.hidden_bias.bias
    if nade.skip:
        b = b + x @ nade.input_visible.weight.T
        c = c + x @ nade.input_hidden.weight.T
    return b, c


def _key_by_key_logits(nade: NADEOutput, s: torch.Tensor, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The textbook NADE loop: a_k = c(s, x) + sum_{j<k} W[:, j] v_j, l_k = b_k(s, x) + V[k] . sigmoid(a_k)."""
    b, c = _textbook_biases(nade, s, x)
    logits = torch.zeros_like(v)
    for n in range(len(v)):
        for k in range(nade.n_keys):
            a = c[n] + sum((nade.W[:, j] * v[n, j] for j in range(k)), torch.zeros_like(c[n]))
            logits[n, k] = b[n, k] + nade.V[k] @ torch.sigmoid(a)
    return logits


SKIP = pytest.mark.parametrize("skip", [False, True], ids=["no-skip", "skip"])


@SKIP
def test_nll_is_a_normalised_distribution_over_all_frames(skip):
    nade = _tiny_nade(keys=6, skip=skip)
    frames = _all_frames(6)
    with torch.no_grad():
        for s, x in zip(torch.randn(3, 3, dtype=torch.float64), _read_frames((3,), 6)):
            log_p = nade.log_prob(s.expand(len(frames), 3), frames, x.expand(len(frames), 6))
            brute = torch.zeros(len(frames), dtype=torch.float64)
            b, c = _textbook_biases(nade, s, x)
            for i, v in enumerate(frames):  # product of the conditionals, each computed from scratch
                for k in range(6):
                    p = torch.sigmoid(b[k] + nade.V[k] @ torch.sigmoid(c + nade.W[:, :k] @ v[:k]))
                    brute[i] += torch.log(p if v[k] else 1 - p)
            assert torch.allclose(log_p, brute, atol=1e-10)
            assert torch.exp(log_p).sum().item() == pytest.approx(1.0, abs=1e-10)


@SKIP
def test_parallel_form_equals_the_key_by_key_loop_with_any_leading_shape(skip):
    nade = _tiny_nade(keys=7, state=4, hidden=5, seed=1, skip=skip)
    s = torch.randn(2, 3, 4, dtype=torch.float64)
    v = (torch.rand(2, 3, 7, generator=torch.Generator().manual_seed(0)) < 0.4).double()
    x = _read_frames((2, 3), 7)
    with torch.no_grad():
        parallel = nade.conditional_logits(s, v, x)
        loop = _key_by_key_logits(nade, s.reshape(-1, 4), v.reshape(-1, 7), x.reshape(-1, 7)).reshape(2, 3, 7)
        assert torch.allclose(parallel, loop, atol=1e-12)
        # Chunked evaluation (no gradient, many frames) gives the same numbers.
        from lapmusic.model import nade as nade_module

        big_s = torch.randn(50, 4, dtype=torch.float64)
        big_v = (torch.rand(50, 7) < 0.5).double()
        big_x = _read_frames((50,), 7, seed=6)
        whole = nade.conditional_logits(big_s, big_v, big_x)
        old = nade_module._CHUNK_FRAMES
        nade_module._CHUNK_FRAMES = 7
        try:
            chunked = nade.conditional_logits(big_s, big_v, big_x)
        finally:
            nade_module._CHUNK_FRAMES = old
        assert torch.allclose(whole, chunked, atol=1e-12)


@SKIP
def test_sampling_frequencies_match_the_model_probabilities(skip):
    nade = _tiny_nade(keys=4, state=2, hidden=3, seed=2, skip=skip)
    frames = _all_frames(4)
    s = torch.tensor([0.3, -0.7], dtype=torch.float64)
    x = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    n = 40_000
    with torch.no_grad():
        probs = torch.exp(nade.log_prob(s.expand(len(frames), 2), frames, x.expand(len(frames), 4))).numpy()
        drawn = nade.sample(s.expand(n, 2), generator=torch.Generator().manual_seed(0), inputs=x.expand(n, 4)).numpy()
    codes = drawn @ (2 ** np.arange(3, -1, -1))  # the row index of the frame in _all_frames
    observed = np.bincount(codes, minlength=16)
    expected = probs * n
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 40.0  # 15 degrees of freedom: P(chi2 > 40) ~ 5e-4 for a correct sampler
    # Temperature 0 is the greedy frame; the cap leaves no frame with more keys than allowed.
    greedy = nade.sample(s[None], temperature=0.0, inputs=x[None])[0].double()
    conditional = torch.sigmoid(nade.conditional_logits(s, greedy, x))
    assert bool(((conditional >= 0.5).double() == greedy).all())
    capped = nade.sample(s.expand(500, 2), max_polyphony=1, generator=torch.Generator().manual_seed(1),
                         inputs=x.expand(500, 4))
    assert int(capped.sum(1).max()) <= 1


@SKIP
def test_metric_predictions_estimate_the_marginals(skip):
    nade = _tiny_nade(keys=4, state=2, hidden=3, seed=3, skip=skip)
    frames = _all_frames(4)
    s = torch.tensor([[0.1, 0.4]], dtype=torch.float64)
    x = torch.tensor([[0.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    with torch.no_grad():
        p_frames = torch.exp(nade.log_prob(s.expand(len(frames), 2), frames, x.expand(len(frames), 4)))
    marginal = (p_frames[:, None] * frames).sum(0)
    on, probs = metric_predictions(nade, s.expand(4000, 2), samples=5, inputs=x.expand(4000, 4))
    assert torch.allclose(probs.mean(0), marginal, atol=0.02)
    assert bool((on == nade.sample(s, temperature=0.0, inputs=x)).all())


def test_the_skip_reads_the_previous_frame_and_is_needed():
    nade = _tiny_nade(keys=5, skip=True)
    s, v = torch.randn(4, 3, dtype=torch.float64), _read_frames((4,), 5, seed=1)
    with torch.no_grad():
        one = nade.conditional_logits(s, v, _read_frames((4,), 5, seed=2))
        other = nade.conditional_logits(s, v, _read_frames((4,), 5, seed=3))
    assert not torch.allclose(one, other)  # the previous frame changes the distribution
    with pytest.raises(ValueError, match="inputs"):
        nade.conditional_logits(s, v)
    with pytest.raises(ValueError, match="inputs"):
        nade.sample(s)
    with pytest.raises(LapMusicError, match="nade_skip needs output 'nade'"):
        PianoRollRNN.from_config(ModelConfig(4, nade_skip=True))


def test_a_zero_initialised_skip_is_exactly_no_skip_and_learns():
    torch.manual_seed(0)
    plain = PianoRollRNN.from_config(ModelConfig(6, output="nade", nade_hidden=5))
    skip = PianoRollRNN.from_config(ModelConfig(6, output="nade", nade_hidden=5, nade_skip=True))
    missing, unexpected = skip.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["head.input_hidden.weight", "head.input_visible.weight"] and not unexpected
    assert not skip.head.input_visible.weight.any() and not skip.head.input_hidden.weight.any()
    x = torch.as_tensor(random_rolls(1, 30, seed=3, density=0.2)[0], dtype=torch.float32)[None]
    with torch.no_grad():
        assert torch.equal(plain(x[:, :-1], targets=x[:, 1:])[0], skip(x[:, :-1], targets=x[:, 1:])[0])
    assert (generate(plain, steps=10, seed=4, n_samples=3) == generate(skip, steps=10, seed=4, n_samples=3)).all()
    primer = x[0, :3].numpy().astype(np.uint8)
    assert (generate(plain, steps=6, seed=2, primer=primer) == generate(skip, steps=6, seed=2, primer=primer)).all()
    # At zero the skip still gets a gradient (dNLL/dW_bx = dNLL/db x^T): training can move it.
    logits, _ = skip(x[:, :-1], targets=x[:, 1:])
    nn_loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, x[:, 1:], reduction="sum")
    nn_loss.backward()
    assert skip.head.input_visible.weight.grad.abs().sum() > 0
    assert skip.head.input_hidden.weight.grad.abs().sum() > 0


def test_set_readout_makes_nade_start_as_the_independent_model():
    torch.manual_seed(0)
    rolls = random_rolls(6, 20, seed=4, density=0.2)
    bernoulli = PianoRollRNN.from_config(ModelConfig(6))
    nade = PianoRollRNN.from_config(ModelConfig(6, output="nade", nade_hidden=5))
    nade.recurrent.load_state_dict(bernoulli.recurrent.state_dict())
    H, Y = collect_states(bernoulli, rolls)
    W, c = fit_readout(H, Y, logistic_steps=0)
    bernoulli.head.set_readout(W, c)
    nade.head.set_readout(W, c)
    x = torch.as_tensor(rolls[0], dtype=torch.float32)[None]
    with torch.no_grad():
        logits_b, _ = bernoulli(x[:, :-1])
        logits_n, _ = nade(x[:, :-1], targets=x[:, 1:])
    assert torch.allclose(logits_b, logits_n, atol=1e-6)
    with pytest.raises(ValueError, match="a NADE output scores given frames: pass targets"):
        nade(x)


@pytest.fixture(scope="module")
def dataset():
    return SimpleNamespace(key="synthetic", train=random_rolls(16, (10, 30), seed=0, density=0.2),
                           valid=random_rolls(4, (10, 30), seed=1, density=0.2),
                           test=random_rolls(4, (10, 30), seed=2, density=0.2))


@pytest.mark.parametrize("init, cell, skip", [("lae", "rnn", True), ("random", "gru", False)])
def test_a_nade_run_trains_end_to_end_and_samples(tmp_path, dataset, init, cell, skip):
    config = TrainConfig(dataset="synthetic", model=ModelConfig(hidden=10, cell=cell, output="nade", nade_hidden=8,
                                                                nade_skip=skip),
                         init=init, epochs=3, lr=1e-2, batch_size=4, bptt=8, seed=0, device="cpu", patience=None)
    final = train(config, tmp_path / "run", dataset=dataset)
    assert final["output"] == "nade" and "greedy" in final["acc_method"]
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    if init == "random":
        assert history[-1]["train_nll"] < history[1]["train_nll"] < history[0]["train_nll"]
    else:
        # The LAE init gives NADE the Bernoulli pre-fit with V = 0 (and the skip at zero): it starts exactly
        # where Bernoulli starts.
        model = dataclasses.replace(config.model, output="bernoulli", nade_skip=False)
        bernoulli = dataclasses.replace(config, model=model, epochs=1)
        train(bernoulli, tmp_path / "bernoulli", dataset=dataset)
        start = json.loads((tmp_path / "bernoulli" / "metrics.jsonl").read_text().splitlines()[0])
        assert history[0]["valid_nll"] == pytest.approx(start["valid_nll"], rel=1e-5)
        assert history[0]["train_nll"] == pytest.approx(start["train_nll"], rel=1e-5)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["output"] == "nade" and saved["nade_skip"] is skip
    if not skip:  # a run folder written before nade_skip existed loads as no skip
        del saved["nade_skip"]
        (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    run = load_run(tmp_path / "run")
    assert isinstance(run.model.head, NADEOutput) and run.model.head.skip is skip and run.config.model.nade_skip is skip
    if skip:  # the last state (best.pt may be the LAE start): training moved the skip from zero
        last = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
        assert last["head.input_visible.weight"].abs().sum() > 0 and last["head.input_hidden.weight"].abs().sum() > 0
    again = evaluate(run, dataset.test)
    assert again["nll"] == pytest.approx(final["nll"], rel=1e-6)
    assert 0 <= again["acc"] <= 100 and 0 <= again["expected_acc"] <= 100
    rolls = generate(run.model, steps=12, primer=dataset.test[0][:3], seed=1, n_samples=2, max_polyphony=2)
    assert rolls.shape == (2, 15, 88) and int(rolls[:, 3:].sum(-1).max()) <= 2
    assert (rolls[:, :3] == dataset.test[0][:3]).all()
    same = generate(run.model, steps=12, primer=dataset.test[0][:3], seed=1, n_samples=2, max_polyphony=2)
    assert (rolls == same).all()


def test_cli_train_with_nade_output(tmp_path, dataset, monkeypatch, capsys):
    monkeypatch.setattr("lapmusic.training.build.load_run_dataset", lambda key: dataset)
    code = cli.main(["train", "--dataset", "jsb", "--hidden", "8", "--init", "random", "--epochs", "1",
                     "--output", "nade", "--nade-hidden", "6", "--nade-skip", "--device", "cpu", "--out",
                     str(tmp_path / "run"), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["output"] == "nade"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["output"] == "nade" and config["nade_hidden"] == 6 and config["nade_skip"] is True
    code = cli.main(["train", "--dataset", "jsb", "--hidden", "8", "--epochs", "1", "--nade-skip", "--device",
                     "cpu", "--out", str(tmp_path / "bad")])
    assert code == 2 and "--nade-skip needs --output nade" in capsys.readouterr().err


def test_greedy_generation_feeds_the_skip_the_frame_just_read():
    torch.manual_seed(1)
    model = PianoRollRNN.from_config(ModelConfig(6, output="nade", nade_hidden=5, nade_skip=True)).eval()
    with torch.no_grad():
        model.head.input_visible.weight.normal_(0, 3.0)  # a strong skip: the wrong frame would show
        model.head.input_hidden.weight.normal_(0, 3.0)
    primer = random_rolls(1, 3, seed=7, density=0.3)[0]
    rolls = generate(model, steps=8, primer=primer, temperature=0.0, seed=0)[0]
    frames = [torch.as_tensor(f, dtype=torch.float32) for f in primer]
    with torch.no_grad():
        states, h = model.hidden_states(torch.stack(frames)[None])
        for _ in range(8):
            frame = model.head.sample(states[:, -1], temperature=0.0, inputs=frames[-1][None])[0].float()
            frames.append(frame)
            states, h = model.hidden_states(frame[None, None], h)
    assert (rolls == torch.stack(frames).numpy()).all()


def test_the_app_sidebar_output_choice_reaches_the_config():
    pytest.importorskip("streamlit")
    from lapmusic.ui.sidebar import Settings, make_config

    settings = Settings(dataset="jsb", hidden=8, init="both", epochs=1, lr=1e-3, batch_size=4, max_sequences=0,
                        patience=0, seed=0, device="cpu", output="nade")
    assert [c.model.output for c in settings.configs()] == ["nade", "nade"]
    assert make_config(settings, "lae").model.output == "nade"


def test_cli_evaluate_generate_compare_with_nade(tmp_path, dataset, monkeypatch, capsys):
    monkeypatch.setattr("lapmusic.training.build.load_run_dataset", lambda key: dataset)
    config = TrainConfig(dataset="synthetic", model=ModelConfig(hidden=8, output="nade", nade_hidden=6), init="random",
                         epochs=1, batch_size=4, device="cpu")
    train(config, tmp_path / "run", dataset=dataset)
    assert cli.main(["evaluate", str(tmp_path / "run"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["output"] == "nade" and "greedy" in result["acc_method"]
    assert cli.main(["generate", str(tmp_path / "run"), "--steps", "8", "--out", str(tmp_path / "s.mid"),
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["output"] == "nade"
    assert cli.main(["compare", "--dataset", "jsb", "--hidden", "6", "--epochs", "1", "--output", "nade",
                     "--nade-hidden", "4", "--max-sequences", "8", "--device", "cpu", "--out",
                     str(tmp_path / "cmp"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["output"] == "nade" and set(summary["inits"]) == {"lae", "random"}
    assert all(d.endswith("-nade") for d in summary["run_dirs"])
