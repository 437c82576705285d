"""The CUDA path against the CPU: LAE solver, network, training, evaluation and sampling.

Every test here is marked ``cuda`` and skips with a reason where ``torch.cuda.is_available()`` is False,
so the suite passes on CPU-only machines; ``pytest -m cuda`` runs just these (scripts/gpu_check.sh does).
Each one computes the same thing on the GPU and on the CPU and compares: the GPU must give the CPU's
answer to the precision the arithmetic allows, not merely run.

``LAPMUSIC_TEST_DEVICE=cpu`` runs them with the CPU standing in for the GPU (both sides on the CPU): a
rehearsal of the test code itself on a machine without a GPU, as ``GPU_CHECK_DEVICE=cpu
scripts/gpu_check.sh`` does. It proves nothing about CUDA.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import chorale_like_piece, random_rolls

from lapmusic.core.device import ieee_fp32_on_cuda
from lapmusic.lae.fit import fit_lae
from lapmusic.model.config import ModelConfig
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.training.config import TrainConfig
from lapmusic.training.results import evaluate, load_run
from lapmusic.training.train import train

DEVICE = os.environ.get("LAPMUSIC_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.usefixtures("one_torch_thread"),  # the CPU side: 2 shared cores
    pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                       reason="no CUDA GPU: torch.cuda.is_available() is False"),
]


def device_name(device) -> str:
    return torch.device(device).type


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(4)
    return SimpleNamespace(
        key="jsb",
        train=[chorale_like_piece(rng, int(rng.integers(24, 48))) for _ in range(16)],
        valid=[chorale_like_piece(rng, 32) for _ in range(4)],
        test=[chorale_like_piece(rng, 32) for _ in range(4)],
    )


def config(device: str, **fields) -> TrainConfig:
    values = dict(dataset="jsb", hidden=16, init="random", epochs=3, lr=1e-2, batch_size=4, bptt=16, seed=5,
                  device=device, patience=None)
    values.update(fields)
    return TrainConfig.from_settings(values)


# ------------------------------------------------------------------------------------------ LAE
@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-9), ("float32", 1e-4)])
def test_lae_approx_solver_on_the_gpu_gives_the_cpu_singular_values(dtype, tolerance):
    pieces = random_rolls(8, (6, 20), seed=21)
    on_gpu = fit_lae(pieces, 12, solver="approx", device=DEVICE, dtype=dtype, seed=3)
    on_cpu = fit_lae(pieces, 12, solver="approx", device="cpu", dtype=dtype, seed=3)
    exact = fit_lae(pieces, 12, solver="exact")
    assert on_gpu.device == device_name(DEVICE) and on_gpu.dtype == dtype
    np.testing.assert_allclose(on_gpu.singular_values, on_cpu.singular_values, rtol=tolerance)
    # and both are the dense SVD's top 12 (the solver converges at this size)
    np.testing.assert_allclose(on_gpu.singular_values, exact.singular_values[:12], rtol=max(tolerance, 1e-6) * 10)
    # B is a contraction on both, and A's rows span the same input subspace (compared through the
    # orthogonal projector onto it, which signs or rotations within equal singular values leave alone)
    assert np.linalg.norm(on_gpu.B, 2) <= 1 + 1e-6

    def projector(A):
        return A.T @ np.linalg.pinv(A @ A.T) @ A

    np.testing.assert_allclose(projector(on_gpu.A), projector(on_cpu.A), atol=100 * tolerance)


# ------------------------------------------------------------------------------------------ network
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_network_forward_and_gradients_on_the_gpu_match_the_cpu(cell):
    ieee_fp32_on_cuda()  # as every lapmusic entry point does on CUDA (TF32 products differed by up to 8e-5)
    torch.manual_seed(0)
    model = PianoRollRNN.from_config(ModelConfig(16, cell=cell))
    x = torch.from_numpy(np.stack(random_rolls(3, 20, seed=2))).float()
    target = torch.roll(x, -1, dims=1)

    def run(device):
        copy = PianoRollRNN.from_config(ModelConfig(16, cell=cell))
        copy.load_state_dict(model.state_dict())
        copy.to(device)
        logits, _ = copy(x.to(device))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target.to(device))
        loss.backward()
        return logits.detach().cpu(), [p.grad.detach().cpu() for p in copy.parameters()]

    gpu_logits, gpu_grads = run(DEVICE)
    cpu_logits, cpu_grads = run("cpu")
    torch.testing.assert_close(gpu_logits, cpu_logits, rtol=1e-4, atol=1e-5)
    for gpu, cpu in zip(gpu_grads, cpu_grads):
        torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-5)


# ------------------------------------------------------------------------------------------ training
@pytest.mark.parametrize("init", ["random", "lae"])
def test_training_on_the_gpu_follows_the_cpu_run(init, dataset, tmp_path):
    fields = {"init": init}
    if init == "lae":  # one LAE for both: the solver's own GPU-vs-CPU agreement is the first test's
        fit_lae(dataset.train, 16, solver="approx", device="cpu", decay=0.3, max_lag=23, seed=5).save(tmp_path / "lae.npz")
        fields["lae_path"] = str(tmp_path / "lae.npz")
    gpu = train(config(DEVICE, **fields), tmp_path / "gpu", dataset=dataset)
    cpu = train(config("cpu", **fields), tmp_path / "cpu", dataset=dataset)
    assert gpu["state"] == cpu["state"] == "finished"
    assert device_name(gpu["device"]) == device_name(DEVICE) and device_name(cpu["device"]) == "cpu"
    gpu_history = load_run(tmp_path / "gpu", device="cpu").history
    cpu_history = load_run(tmp_path / "cpu", device="cpu").history
    # Epoch 0 is the initial network: the same weights (random: the same seed; LAE: the same LAE, then the
    # readout pre-fitted on each device: least squares + 20 L-BFGS steps in float32) evaluated on both devices.
    rtol = 1e-5 if init == "random" else 1e-3
    assert gpu_history[0]["valid_nll"] == pytest.approx(cpu_history[0]["valid_nll"], rel=rtol)
    # Three epochs of Adam amplify rounding differences a little, never into another result.
    assert gpu["nll"] == pytest.approx(cpu["nll"], rel=2e-2)
    if init == "random":  # it learned (the LAE init starts near its best: lr 1e-2 can only lose there)
        assert gpu_history[-1]["valid_nll"] < gpu_history[0]["valid_nll"]


# ------------------------------------------------------------------------------------------ evaluation + sampling
@pytest.fixture(scope="module")
def trained_run(dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cuda") / "run"
    train(config("cpu", epochs=2), run_dir, dataset=dataset)
    return run_dir


def test_evaluation_on_the_gpu_gives_the_cpu_metrics(trained_run, dataset):
    on_gpu = load_run(trained_run, device=DEVICE)
    on_cpu = load_run(trained_run, device="cpu")
    assert device_name(on_gpu.device) == device_name(DEVICE)
    assert device_name(next(on_gpu.model.parameters()).device) == device_name(DEVICE)
    gpu, cpu = evaluate(on_gpu, dataset.test), evaluate(on_cpu, dataset.test)
    assert gpu["frames"] == cpu["frames"]
    for key in ("nll", "acc", "expected_acc"):
        assert gpu[key] == pytest.approx(cpu[key], rel=1e-5), key


def test_sampling_on_the_gpu_is_repeatable_and_agrees_with_the_cpu(trained_run, dataset):
    from lapmusic.sampling.sample import sample_run

    on_gpu = load_run(trained_run, device=DEVICE)
    on_cpu = load_run(trained_run, device="cpu")
    primer = dataset.test[0][:8]
    (first,) = sample_run(on_gpu, steps=40, temperature=1.0, primer=primer, seed=11)
    (again,) = sample_run(on_gpu, steps=40, temperature=1.0, primer=primer, seed=11)
    assert np.array_equal(first.roll, again.roll)  # same seed, same run, same device: the same sample
    assert first.roll.shape == (48, 88) and np.array_equal(first.roll[:8], primer)
    # Temperature 0 is deterministic on both devices (a key sounds when p >= 0.5): the same piece, up to
    # a key whose probability rounds to the other side of 0.5 on one device (allowed: 1 cell in 100).
    (gpu_greedy,) = sample_run(on_gpu, steps=40, temperature=0.0, primer=primer, seed=0)
    (cpu_greedy,) = sample_run(on_cpu, steps=40, temperature=0.0, primer=primer, seed=0)
    assert np.mean(gpu_greedy.roll == cpu_greedy.roll) >= 0.99
