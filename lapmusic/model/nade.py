"""A NADE output layer conditioned on the recurrent state (RNN-NADE, Boulanger-Lewandowski et al., ICML 2012).

The Bernoulli output predicts the 88 keys of frame ``t+1`` independently given the recurrent state
``s_t`` (``p`` units). NADE (Larochelle & Murray, 2011) instead factorises the frame autoregressively
over the keys, ordered low to high::

    P(v | s_t) = prod_{k=1..K} P(v_k | v_{<k}, s_t)

    a_k  = c(s_t) + sum_{j<k} W[:, j] v_j                     (H NADE hidden units; a_1 = c(s_t))
    h_k  = sigmoid(a_k)
    P(v_k = 1 | v_{<k}, s_t) = sigmoid(b_k(s_t) + V[k] . h_k)

with the shared weights ``W`` ``(H, K)`` and ``V`` ``(K, H)``, and - the RNN-NADE conditioning - both bias
vectors linear functions of the recurrent state::

    b(s_t) = W_bs s_t + b       (K,)   the "visible" biases: exactly the Bernoulli readout
    c(s_t) = W_cs s_t + c       (H,)   the NADE hidden biases

Every conditional is normalised, so the product is a normalised distribution over all ``2^K`` frames and
its negative log-likelihood is *exact*: ``-log P(v | s_t) = sum_k BCE(l_k, v_k)`` with the conditional
logits ``l_k = b_k(s_t) + V[k] . h_k``. Given the observed frame (teacher forcing), all ``a_k`` follow from
one exclusive cumulative sum over the keys of ``W[:, j] v_j`` (the running-sum form of NADE; computed over
the keys that are on, see :meth:`NADEOutput._logits`), so training and evaluation need no loop over keys.
Sampling has to go key by key (``v_k`` is needed before ``a_{k+1}``); that loop is :meth:`NADEOutput.sample`.

With ``V = 0`` every conditional is ``sigmoid(b_k(s_t))``: the layer is then exactly the Bernoulli readout
``b(s_t)``. The LAE initialisation uses that (see :meth:`NADEOutput.set_readout`).

**Previous-frame skip** (``skip=True``, ``ModelConfig.nade_skip``): both bias vectors also get a linear term in
the frame ``x_t`` the network has just read (the frame before the one predicted)::

    b(s_t, x_t) = W_bs s_t + W_bx x_t + b      W_bx (K, K)
    c(s_t, x_t) = W_cs s_t + W_cx x_t + c      W_cx (H, K)

so "hold this key" (``W_bx``) and "is the frame so far the previous chord?" (the NADE hidden units see
``W_cx x_t + sum_{j<k} W[:, j] v_j``) are first-order features instead of something that must pass through the
tanh state. ``W_bx`` and ``W_cx`` start at zero: a new layer with the skip computes exactly what it computes
without it, so the LAE readout pre-fit and its "starts as the independent model" property are unchanged. The
skip changes only the biases, so the running-sum form, the exact NLL and key-by-key sampling are as above
with ``b`` and ``c`` replaced by these; the frames read are passed as ``inputs`` (``(..., K)``, the same
leading shape as ``states``) and are required when the skip is on.
"""

from __future__ import annotations

import torch
from torch import nn

from lapmusic.model.head import OutputHead

EXPECTED_ACC_SAMPLES = 10
"""Frames drawn per predicted frame to estimate NADE's expected ACC (see :func:`metric_predictions`)."""

_CHUNK_FRAMES = 4096  # frames per chunk when no gradient is needed: bounds the (N, S, K) memory


def in_chunks(fn, s: torch.Tensor, v: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
    """``fn(s, v, x)`` over rows ``(N, ...)``; without gradients in chunks of ``_CHUNK_FRAMES`` rows, which
    bounds the memory of the per-row work (the NADE's running sums, the vocabulary's softmax), same result."""
    if torch.is_grad_enabled() or len(s) <= _CHUNK_FRAMES:
        return fn(s, v, x)
    chunk = _CHUNK_FRAMES
    return torch.cat([fn(s[i : i + chunk], v[i : i + chunk], None if x is None else x[i : i + chunk])
                      for i in range(0, len(s), chunk)])


class NADEOutput(OutputHead):
    """NADE over ``n_keys`` binary keys whose biases are linear in a state of ``state_size`` units.

    Parameters: ``visible_bias`` (``Linear(state_size, K)``: ``b(s)``), ``hidden_bias``
    (``Linear(state_size, H)``: ``c(s)``), ``W`` ``(H, K)``, ``V`` ``(K, H)``; with ``skip=True`` also
    ``input_visible`` (``W_bx``, ``Linear(K, K)`` without bias) and ``input_hidden`` (``W_cx``, ``Linear(K, H)``
    without bias), both zero at initialisation (module docstring, "Previous-frame skip").

    ``frame_mixture``: False here; True for the heads that mix the NADE with whole-frame components, whose
    NLL is their :meth:`log_prob` and not a sum of per-key BCEs.
    """

    frame_mixture = False

    def __init__(self, state_size: int, n_keys: int, hidden: int, skip: bool = False):
        super().__init__()
        if hidden < 1:
            raise ValueError(f"the NADE needs at least one hidden unit, got {hidden}")
        self.n_keys = int(n_keys)
        self.hidden = int(hidden)
        self.visible_bias = nn.Linear(state_size, n_keys)
        self.hidden_bias = nn.Linear(state_size, hidden)
        # Initialisation as in Larochelle & Murray's code: small uniform weights.
        bound = 1.0 / (hidden ** 0.5)
        self.W = nn.Parameter(torch.empty(hidden, n_keys).uniform_(-bound, bound))
        self.V = nn.Parameter(torch.empty(n_keys, hidden).uniform_(-bound, bound))
        self.skip = bool(skip)
        if self.skip:
            self.input_visible = nn.Linear(n_keys, n_keys, bias=False)
            self.input_hidden = nn.Linear(n_keys, hidden, bias=False)
            nn.init.zeros_(self.input_visible.weight)  # zero: the same function as without the skip
            nn.init.zeros_(self.input_hidden.weight)

    def history_kwargs(self, inputs: torch.Tensor | None, past: torch.Tensor | None,
                       dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The extra keyword arguments :meth:`sample` needs for each flattened step besides the frame read:
        none for this output (an output with a copy window overrides this).

        Parameters
        ----------
        inputs : Tensor of shape (B, T, K) or None
            The frames read at each step.
        past : Tensor of shape (B, P, K) or None
            The frames read just before ``inputs``.
        dtype : torch.dtype
            The dtype of the states.

        Returns
        -------
        dict
            Keyword arguments of :meth:`sample`, one row per flattened step.
        """
        return {}

    def extra_repr(self) -> str:
        return f"keys={self.n_keys}, nade_hidden={self.hidden}, skip={self.skip}"

    # ----------------------------------------------------------------------- the head interface
    def key_logits(self, states: torch.Tensor, inputs: torch.Tensor,
                   targets: torch.Tensor | None = None) -> torch.Tensor:
        """The conditional logits of the keys of ``targets`` (:meth:`conditional_logits`)."""
        if targets is None:
            raise ValueError("a NADE output scores given frames: pass targets (B, T, 88), or sample with "
                             "lapmusic.sampling.sample.generate")
        if self.frame_mixture:
            raise ValueError("a chord-vocabulary or repeat NADE has no per-key logits whose BCE sum is its NLL: "
                             "use frame_nll")
        return self.conditional_logits(states, targets, inputs=inputs)

    def metric_scores(self, states: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor,
                      past: torch.Tensor | None, samples: int, seed: int) -> dict:
        """The greedy frame and the sampled key shares (:func:`metric_predictions`), with the conditional logits,
        or for a frame mixture the exact NLL of each frame."""
        on, probs = metric_predictions(self, states, samples=samples, seed=seed, inputs=inputs, past=past)
        if self.frame_mixture:
            return {"logits": None, "on": on, "probs": probs, "nll": -self.log_prob(states, targets, inputs, past)}
        return {"logits": self.conditional_logits(states, targets, inputs=inputs), "on": on, "probs": probs}

    def set_readout(self, W: torch.Tensor, c: torch.Tensor, skip: torch.Tensor | None = None) -> None:
        """``W s + c`` becomes the visible-bias map ``b(s)`` and ``V = 0``, so that every conditional is
        ``sigmoid(b_k(s))``: the network starts as exactly the fitted independent-key model (same NLL), and
        training then learns the dependencies between the keys of a frame (``V`` gets a gradient at once
        because the NADE hidden units ``sigmoid(a_k)`` are not zero)."""
        if skip is not None:
            raise ValueError("a skip weight was given but the network has no readout skip")
        with torch.no_grad():
            self.visible_bias.weight.copy_(W.to(self.visible_bias.weight.device))
            self.visible_bias.bias.copy_(c.to(self.visible_bias.bias.device))
            self.V.zero_()

    def acc_method(self) -> str:
        if self.frame_mixture:
            return (f"ACC: greedy frame ({self.greedy_choice()}); expected ACC: {EXPECTED_ACC_SAMPLES} frames "
                    "sampled from the mixture per predicted frame")
        return (f"ACC: greedy frame (key by key, conditional p >= 0.5); expected ACC: {EXPECTED_ACC_SAMPLES} "
                "sampled frames per predicted frame")

    def greedy_choice(self) -> str:
        """How a frame mixture's greedy frame (the one ACC counts) is chosen, in words."""
        return "the NADE's greedy frame"

    def biases(self, states: torch.Tensor, inputs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(b, c)``: visible ``(..., K)`` and hidden ``(..., H)`` biases for states ``(..., p)``.

        ``b = W_bs s + b_0`` and ``c = W_cs s + c_0``; with the skip ``+ W_bx x`` and ``+ W_cx x`` for the
        frames read ``inputs`` ``(..., K)`` (required then, ignored otherwise).
        """
        b, c = self.visible_bias(states), self.hidden_bias(states)
        if self.skip:
            if inputs is None:
                raise ValueError("this NADE has the previous-frame skip: pass the frames read as inputs (..., K)")
            x = inputs.to(b.dtype)
            b = b + self.input_visible(x)
            c = c + self.input_hidden(x)
        return b, c

    # ----------------------------------------------------------------------- parallel (teacher forced)
    def conditional_logits(self, states: torch.Tensor, frames: torch.Tensor,
                           inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``l_k`` of ``P(v_k = 1 | v_{<k}, s)`` for observed frames, all keys at once.

        ``states`` ``(..., p)``, ``frames`` ``(..., K)`` 0/1 (any matching leading shape) -> ``(..., K)``;
        ``inputs`` ``(..., K)``: the frames read before each state (used by the skip, see :meth:`biases`).
        See :meth:`_logits` for the running-sum computation; without gradients it runs in chunks of frames
        to bound memory (the result is the same).
        """
        lead = frames.shape[:-1]
        s = states.reshape(-1, states.shape[-1])
        v = frames.reshape(-1, self.n_keys).to(s.dtype)
        x = inputs.reshape(-1, self.n_keys) if self.skip and inputs is not None else None
        return in_chunks(self._logits, s, v, x).reshape(*lead, self.n_keys)

    def _logits(self, s: torch.Tensor, v: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, p)`` states, ``(N, K)`` frames (and ``(N, K)`` frames read, for the skip) -> ``(N, K)`` logits.

        The running sum ``a_k = c(s) + sum_{j<k} v_j W[:, j]`` only changes at the keys that are on, so
        within a frame holding ``m`` keys it takes ``m + 1`` values ("segments"): segment ``i`` is
        ``c(s)`` plus the columns of ``W`` of the frame's lowest ``i`` keys on (a cumulative sum over the
        keys on, the running-sum form without its zero terms), and key ``k`` lies in segment
        ``i(k) = sum_{j<k} v_j``. So ``l_k = b_k(s) + V[k] . sigmoid(a_seg[i(k)])``: with ``S = 1 + max m`` over
        the frames, one ``(N, S, H)`` sigmoid and one ``(N, S, H) x (H, K)`` product give every key of every
        frame. Exact, and for chords of a few keys about ``K / S`` times less work than the dense
        ``(N, K, H)`` form (``a_k`` for every key), which it equals (tests/test_nade.py).
        """
        n, keys = v.shape
        on = v > 0.5
        rank = torch.cumsum(on, dim=1)  # (N, K): keys on up to and including key k
        most = int(rank[:, -1].max()) if n else 0
        # Indices of the keys on, lowest first, padded with the index `keys` (a zero column of W); each key on is
        # scattered to its rank (no sort); the keys off all land in a spare last column, then dropped.
        lowest = torch.full((n, most + 1), keys, dtype=torch.long, device=v.device)
        lowest.scatter_(1, torch.where(on, rank - 1, most), torch.arange(keys, device=v.device).expand(n, keys))
        lowest = lowest[:, :most]  # (N, m)
        columns = torch.cat([self.W.T, self.W.new_zeros(1, self.hidden)])  # (K + 1, H)
        running = torch.cumsum(columns[lowest], dim=1)  # (N, m, H): W[:, j1], W[:, j1] + W[:, j2], ...
        b, c = self.biases(s, x)
        c = c.unsqueeze(1)  # (N, 1, H)
        a = torch.cat([c, c + running], dim=1)  # (N, S, H), segment 0 = no key below
        scores = torch.sigmoid(a) @ self.V.T  # (N, S, K): V[k] . sigmoid(a_seg) for every segment and key
        segment = (rank - on.long()).unsqueeze(1)  # (N, 1, K): keys on below key k
        return b + scores.gather(1, segment).squeeze(1)

    def log_prob(self, states: torch.Tensor, frames: torch.Tensor, inputs: torch.Tensor | None = None,
                 past: torch.Tensor | None = None) -> torch.Tensor:
        """``log P(v | s[, x])`` ``(...)`` of whole frames: ``-sum_k BCE(l_k, v_k)`` (``past`` is not read)."""
        logits = self.conditional_logits(states, frames, inputs)
        return -nn.functional.binary_cross_entropy_with_logits(
            logits, frames.to(logits.dtype), reduction="none").sum(-1)

    # ----------------------------------------------------------------------- key by key
    @torch.no_grad()
    def sample(self, states: torch.Tensor, temperature: float = 1.0, max_polyphony: int | None = None,
               generator: torch.Generator | None = None, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Draw one frame per state, key by key from the lowest: ``(N, p)`` -> ``(N, K)`` uint8.

        ``inputs`` ``(N, K)``: the frames read before each state (required with the skip, :meth:`biases`).

        Each conditional logit is divided by ``temperature`` before its sigmoid; ``temperature = 0`` is the
        greedy decoding (``v_k = 1`` iff ``P(v_k = 1 | v_{<k}, s) >= 0.5``). ``max_polyphony``: once a frame
        holds that many keys, its remaining (higher) keys stay off - the cap applied to the conditionals,
        so the keys already drawn condition everything after them as usual.
        """
        n = states.shape[0]
        b, a = self.biases(states, inputs)  # a (N, H): running pre-activation a_k, starting at c(s)
        b = b.T.contiguous()  # (K, N): row k is b_k(s) for every frame
        # Key k is on iff l_k / T > logit(u_k), u_k ~ U(0, 1): the thresholds of all keys drawn at once.
        if temperature == 0.0:
            thresholds = torch.zeros(self.n_keys, n, dtype=a.dtype, device=a.device)
        else:
            uniform = torch.rand(self.n_keys, n, generator=generator, device=a.device, dtype=a.dtype)
            thresholds = temperature * torch.logit(uniform)
        count = torch.zeros(n, dtype=a.dtype, device=a.device) if max_polyphony is not None else None
        Wt = self.W.T.contiguous()
        # One set of buffers for the whole loop, updated in place: a fresh (N, H) tensor per key would be
        # allocated and freed 88 times a frame (page faults, kernel time; docs/research/throughput.md).
        a = a.contiguous()
        h = torch.empty_like(a)
        logit = torch.empty(n, dtype=a.dtype, device=a.device)
        on = torch.empty(n, dtype=a.dtype, device=a.device)
        frames = torch.empty(self.n_keys, n, dtype=torch.uint8, device=a.device)
        for k in range(self.n_keys):
            torch.sigmoid(a, out=h)
            torch.addmv(b[k], h, self.V[k], out=logit)  # b_k(s) + V[k] . sigmoid(a_k)
            torch.ge(logit, thresholds[k], out=frames[k])
            on.copy_(frames[k])
            if count is not None:
                on.mul_(count < max_polyphony)
                count += on
                frames[k].copy_(on)
            a.addr_(on, Wt[k])  # a_{k+1} = a_k + v_k W[:, k]
        return frames.T.contiguous()


@torch.no_grad()
def metric_predictions(nade: NADEOutput, states: torch.Tensor, samples: int = EXPECTED_ACC_SAMPLES,
                       seed: int = 0, inputs: torch.Tensor | None = None,
                       past: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """What NADE's ACC and expected ACC are computed from, for states ``(..., p)`` (and the frames read
    before them, ``inputs`` ``(..., K)``, for the skip).

    - ``on`` ``(..., K)``: the greedy frame (key by key, ``v_k = 1`` iff its conditional is ``>= 0.5``).
      NADE's ACC is the usual ACC of that frame against the target. (Thresholding each key's *marginal*
      at 0.5 would be the exact analogue of the Bernoulli rule, but NADE's marginals are intractable.)
    - ``probs`` ``(..., K)``: the share of ``samples`` frames drawn at temperature 1 (seeded) with the key
      on, an unbiased estimate of the marginal ``P(v_k = 1 | s)``. Expected ACC is the Bernoulli formula
      with these: soft ``TP = sum p y`` etc. are then unbiased estimates of the expected counts.
    """
    lead = states.shape[:-1]
    flat = states.reshape(-1, states.shape[-1])
    read = None if inputs is None else inputs.reshape(-1, inputs.shape[-1])
    extra = nade.history_kwargs(inputs, past, flat.dtype)
    repeated = {name: value.repeat(samples, *[1] * (value.dim() - 1)) for name, value in extra.items()}
    on = nade.sample(flat, temperature=0.0, inputs=read, **extra)
    generator = torch.Generator(device=flat.device).manual_seed(seed)
    drawn = nade.sample(flat.repeat(samples, 1), temperature=1.0, generator=generator,  # one batched loop
                        inputs=None if read is None else read.repeat(samples, 1), **repeated)
    probs = drawn.reshape(samples, len(flat), nade.n_keys).double().mean(0)
    return on.reshape(*lead, nade.n_keys), probs.reshape(*lead, nade.n_keys)
