"""The hand-written tanh RNN (lapmusic.model.elman) against torch.nn.RNN, the brute force it replaces on the CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lapmusic.model.config import ModelConfig
from lapmusic.model.elman import elman_states
from lapmusic.model.rnn import PianoRollRNN


def _graph_names(tensor: torch.Tensor) -> set[str]:
    """The names of every backward node that produced ``tensor``."""
    names, stack, seen = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("rows, steps, with_state", [(3, 7, True), (3, 7, False), (1, 1, True), (5, 2, False)])
def test_states_and_gradients_equal_torch_rnn(rows, steps, with_state):
    torch.manual_seed(rows * 10 + steps)
    rnn = nn.RNN(6, 4, batch_first=True).double()
    with torch.no_grad():  # larger weights than torch's default: tanh far from linear, states near +-1 too
        for weight in rnn.parameters():
            weight.mul_(3)
    x = torch.randn(rows, steps, 6, dtype=torch.float64, requires_grad=True)
    h = torch.randn(1, rows, 4, dtype=torch.float64, requires_grad=True) if with_state else None
    weights = [x, *rnn.parameters()] + ([h] if with_state else [])
    upstream = torch.randn(rows, steps, 4, dtype=torch.float64), torch.randn(1, rows, 4, dtype=torch.float64)

    def run(function):
        for tensor in weights:
            tensor.grad = None
        states, last = function(x, h)
        ((states * upstream[0]).sum() + (last * upstream[1]).sum()).backward()
        return states.detach(), last.detach(), [tensor.grad.clone() for tensor in weights]

    expected = run(rnn)
    got = run(lambda inputs, state: elman_states(rnn, inputs, state))
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(got[1], expected[1], rtol=0, atol=1e-12)
    for mine, theirs in zip(got[2], expected[2]):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-11)


def test_gradcheck():
    torch.manual_seed(0)
    rnn = nn.RNN(3, 2, batch_first=True).double()
    x = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(1, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inputs, state: elman_states(rnn, inputs, state)[0], (x, h))


def test_float32_matches_torch_to_single_precision():
    torch.manual_seed(1)
    rnn = nn.RNN(88, 128, batch_first=True)
    x = (torch.rand(8, 100, 88) < 0.05).float()
    torch.testing.assert_close(elman_states(rnn, x)[0], rnn(x)[0], rtol=0, atol=2e-6)


def test_empty_window_keeps_the_state():
    rnn = nn.RNN(3, 2, batch_first=True)
    h = torch.randn(1, 4, 2)
    states, last = elman_states(rnn, torch.zeros(4, 0, 3), h)
    assert states.shape == (4, 0, 2) and torch.equal(last, h)


def test_network_runs_the_hand_written_steps_on_the_cpu_unless_told_not_to():
    torch.manual_seed(2)
    model = PianoRollRNN.from_config(ModelConfig(16, output="nade", nade_hidden=8)).double()
    x = (torch.rand(2, 5, 88) < 0.1).double()
    targets = (torch.rand(2, 5, 88) < 0.1).double()
    model.eval()  # no dropout: both runs see the same states
    mine, _ = model.frame_nll(x, targets=targets)
    assert "_ElmanStepsBackward" in _graph_names(mine)
    model.hand_written_steps = False
    reference, _ = model.frame_nll(x, targets=targets)
    assert "_ElmanStepsBackward" not in _graph_names(reference)
    torch.testing.assert_close(mine, reference, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_cells_keep_torch(cell):
    model = PianoRollRNN.from_config(ModelConfig(8, cell=cell))
    states, _ = model.hidden_states(torch.zeros(1, 3, 88))
    assert "_ElmanStepsBackward" not in _graph_names(states)
