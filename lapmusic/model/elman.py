"""The tanh RNN's forward and backward-through-time written out by hand, for the CPU.

    h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)                       (B rows, p units)

``torch.nn.RNN`` on the CPU records every time step in the autograd graph: a step's backward costs about ten
operations, two of them matrix products per step (the gradient of ``W_hh`` among them, a ``(p, B) x (B, p)``
product, inefficient for small batches). Here the input projection of every step is one product, the forward
loop is two in-place operations a step (``addmm_`` into a preallocated buffer, then ``sigmoid_``: the loop
carries ``s_t = (h_t + 1) / 2``, see :class:`_ElmanSteps`), the backward loop is two (``addmm_``, ``mul_``), and
the weight gradients are one product each over all steps:

    d_t        = (dL/dh_t + d_{t+1} W_hh) * (1 - h_t^2)                    (B, p), d_{T+1} = 0
    dL/dW_hh   = sum_t d_t^T h_{t-1}       dL/dW_ih = sum_t d_t^T x_t       dL/db = sum_t sum_rows d_t
    dL/dh_0    = d_1 W_hh                  dL/dx_t  = d_t W_ih

The parameters stay those of the ``torch.nn.RNN`` module (same state dict); :func:`elman_states` is used in
place of calling it (:class:`lapmusic.model.rnn.PianoRollRNN`), and CUDA keeps cuDNN's fused kernel.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable


class _ElmanSteps(torch.autograd.Function):
    """Time-major states ``(T, B, p)`` of the tanh recursion (module docstring)."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh):
        steps, rows, _ = x.shape
        # tanh(z) = 2 sigmoid(2z) - 1, and torch's sigmoid is about three times faster than its tanh: the loop
        # runs on s_t = sigmoid(2 z_t), where 2 z_t = 2 (W_ih x_t + b - W_hh 1) + 4 W_hh s_{t-1}.
        # Every step's input term in one product, written straight into the states' buffer.
        states = torch.addmm(b_ih + b_hh - w_hh.sum(1), x.reshape(steps * rows, -1), w_ih.t(), beta=2, alpha=2)
        states = states.view(steps, rows, -1)
        w_rec = (4 * w_hh).t().contiguous()  # a contiguous right factor: the faster product
        previous = (h0 + 1) / 2
        for t in range(steps):
            previous = states[t].addmm_(previous, w_rec).sigmoid_()
        states.mul_(2).sub_(1)  # h_t = 2 s_t - 1
        ctx.save_for_backward(x, h0, w_ih, w_hh, states)
        return states

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_states):
        x, h0, w_ih, w_hh, states = ctx.saved_tensors
        steps = states.shape[0]
        slope = 1.0 - states * states  # tanh' at every step, in one operation
        delta = grad_states.clone(memory_format=torch.contiguous_format)  # d_t, computed in place from dL/dh_t
        delta[steps - 1].mul_(slope[steps - 1])
        for t in range(steps - 2, -1, -1):
            delta[t].addmm_(delta[t + 1], w_hh).mul_(slope[t])
        flat = delta.reshape(-1, delta.shape[-1])
        grad_b = flat.sum(0)
        grad_w_ih = flat.t() @ x.reshape(-1, x.shape[-1])
        grad_w_hh = delta[0].t() @ h0
        if steps > 1:  # h_{t-1} of steps 2..T are the states of steps 1..T-1
            grad_w_hh.addmm_(delta[1:].reshape(-1, delta.shape[-1]).t(), states[:-1].reshape(-1, states.shape[-1]))
        grad_h0 = delta[0] @ w_hh if ctx.needs_input_grad[1] else None
        grad_x = (flat @ w_ih).view_as(x) if ctx.needs_input_grad[0] else None
        return grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b, grad_b


def elman_states(rnn: nn.RNN, x: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``rnn(x, h)`` returns, for a one-layer, batch-first tanh ``torch.nn.RNN``, computed by
    :class:`_ElmanSteps`.

    Parameters
    ----------
    rnn : torch.nn.RNN
        ``nonlinearity="tanh"``, one layer, ``batch_first=True``, with biases; its parameters are used.
    x : Tensor of shape (B, T, K)
        The frames read.
    h : Tensor of shape (1, B, p), optional
        The state before the first frame (``None``: zeros).

    Returns
    -------
    states : Tensor of shape (B, T, p)
        ``h_1 .. h_T`` (a view of a time-major buffer).
    h_last : Tensor of shape (1, B, p)
        ``h_T``, to continue the same sequences.
    """
    rows, hidden = x.shape[0], rnn.hidden_size
    h0 = x.new_zeros(rows, hidden) if h is None else h[0]
    if x.shape[1] == 0:
        return x.new_zeros(rows, 0, hidden), h0.unsqueeze(0)
    x = x.transpose(0, 1).contiguous()  # (T, B, K): each step's rows side by side
    states = _ElmanSteps.apply(x, h0, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
    return states.transpose(0, 1), states[-1].unsqueeze(0)
