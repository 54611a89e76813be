"""The Elman cell's whole update as one static-shape function, replayed as a CUDA graph.

On a GPU the time of a short window goes to launching kernels, not to arithmetic: an update of
TBPTT(16, 16) is a few dozen kernels of a few microseconds each, and the Python that launches
them costs more than the GPU that runs them. Here one update — forward over the new segment,
readout and loss, the hand-written backward over the last k2 steps (``elman_backward``, the
recursion the manual-elman path runs too), global-norm clipping without a host sync, and the optimizer's step — reads and
writes only preallocated buffers, so on CUDA it is captured once as a ``torch.cuda.CUDAGraph``
and replayed once per update with no Python in between. The same function runs eagerly on any
device (path ``"static-elman"``), which is how the CPU tests check it against the oracles.

The window is a sliding buffer of the last k2 steps (oldest first): per slot, the state before
the step, f'(pre) and the input, and the W_hh of the step's own time (stored history,
docs/semantics.md). Before the first k2 steps exist, the empty slots hold f' = 0, so the recursion adds
exactly nothing there. Where the window lies inside its own segment (no stored history; the
engine decides) and spans at least ``FUSED_MIN_STEPS`` steps, the window's backward is instead
autograd through the model's fused kernel (cuDNN's forward and backward, inside the graph on
CUDA): one backward kernel rather than two small ones per step, and no window buffers at all.
Only deterministic TBPTT(k1, k2) styles run here: random truncation
draws on the host (the manual-elman path does it). Which updates the graph serves: every update whose
segment has k1 steps; a shorter last segment (T not a multiple of k1) runs eagerly.

Graph capture needs an optimizer whose step is capture-safe: ``torch.optim.SGD`` or one built
with ``capturable=True`` (Adam, AdamW). ``train_stream(cuda_graphs=False)`` keeps "auto" off
this path; ``graph_forward="loop"`` replaces the fused cuDNN forward inside it by per-step
products. Where capture fails the updates run eagerly and ``fallback_reason`` says why.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import Tensor

from ..clipping import clip_by_global_norm_
from ..counting import backprop_steps, forward_steps
from ..elman_backward import backward_steps
from ..losses import LOSS_GRADS, LOSSES
from ..records import TrainResult, UpdateRecord
from ..saved_memory import SavedTensorMeter
from .base import PathInputs

__all__ = [
    "FUSED_MIN_STEPS",
    "WARMUP_UPDATES",
    "GraphedElman",
    "graph_safe_optimizer",
]

#: Eager updates on the capture's side stream before capture (lazy optimizer state, cuBLAS and
#: cuDNN handles and workspaces for that stream). One suffices; each costs a whole eager update.
WARMUP_UPDATES = 1
#: Segments at least this long run their forward as one fused kernel on CUDA (a loop of
#: 2 launches per step otherwise).
FUSED_MIN_STEPS = 4


def graph_safe_optimizer(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` may be captured: plain SGD (no host state), or every group
    built with ``capturable=True`` (its step counter then lives on the device)."""
    groups = optimizer.param_groups
    if any(g.get("differentiable", False) for g in groups):
        return False
    return type(optimizer) is torch.optim.SGD or all(g.get("capturable", False) for g in groups)


class GraphedElman:
    """Trains an ElmanRNN on one stream under TBPTT(k1, k2) with static buffers (a ``Path``).

    ``run(callback)`` performs every update in order; the per-update (loss, grad norm, clipped)
    rows stay on the device and are read once at the end unless a callback needs each record as
    it happens. Counts come from the window formula (no random truncation here): an update at u
    traversed min(k2, u) steps per row.
    """

    def __init__(self, inputs: PathInputs):
        self.inputs = inputs
        model, x, k2 = inputs.model, inputs.x, inputs.k2
        self.model, self.x, self.y, self.k1, self.k2 = model, x, inputs.y, inputs.k1, k2
        self.clip, self.optimizer, self.per_step = inputs.clip, inputs.optimizer, inputs.per_step
        self.loss_sum, self.loss_grad = LOSSES[inputs.loss], LOSS_GRADS[inputs.loss]
        # A window inside its own segment (no stored history) of a fused cell backpropagates
        # through the fused kernel by autograd (cuDNN's backward on CUDA: one kernel, not two per step).
        autograd_window = not inputs.stored_history and model.fused_window and k2 >= FUSED_MIN_STEPS
        self.tanh = model.nonlinearity == "tanh"
        self.live = model.params()
        self.names = list(self.live)
        self.capture = inputs.capture and x.device.type == "cuda"
        self.captured = False
        self.capture_error: str | None = None  # why capture failed, if it did
        self.fused_forward = self.tanh and x.device.type == "cuda" and inputs.graph_forward == "fused"
        self.autograd_window = autograd_window
        B, H, D = x.shape[1], model.hidden_size, model.input_size
        kw = {"device": x.device, "dtype": x.dtype}
        W = 0 if autograd_window else k2  # no slots kept: the window is the segment's own
        self.h = inputs.h0.detach().clone()  # the carried state
        self.hp = torch.zeros(W, B, H, **kw)  # per window slot: state before the step
        self.da = torch.zeros(W, B, H, **kw)  #   f'(pre); 0 marks a slot before step 1
        self.xb = torch.zeros(W, B, D, **kw)  #   the step's input
        self.wb = torch.zeros(W, H, H, **kw)  #   W_hh of the step's time
        self.dpre = torch.zeros(W, B, H, **kw)
        self.t0 = torch.zeros((), dtype=torch.long, device=x.device)  # next segment's first index
        self.record = torch.zeros(3, **kw)  # loss, grad norm, clipped of the last update
        self.grads = {n: torch.zeros_like(p) for n, p in self.live.items()}
        self._aranges: dict[int, Tensor] = {}

    # -- one update ---------------------------------------------------------------------------

    @torch.no_grad()
    def _update(self, L: int, scale: float) -> None:
        """The update after a segment of L steps; ``scale`` = 1 / (elements of its losses).
        Device work only: no host reads, no allocation that depends on data."""
        idx = self.t0 + self._arange(L)
        xs, ys = self.x.index_select(0, idx), self.y.index_select(0, idx)
        if self.autograd_window:
            objective = self._gradients_autograd(L, scale, xs, ys)
        else:
            objective = self._gradients_manual(L, scale, xs, ys)
        self._clip_step_record(objective)
        self.t0 += L

    def _gradients_autograd(self, L: int, scale: float, xs: Tensor, ys: Tensor) -> Tensor:
        """Gradients when the window lies inside the segment (no stored history): steps before
        the window forward without a graph (their losses reach the readout only), the window
        forward and backward through the model's fused kernel (cuDNN's on CUDA) by autograd."""
        p, n0 = self.live, max(L - self.k2, 0)
        hs0, h_mid = self.model.window(p, xs[:n0], self.h) if n0 else (None, self.h)
        with torch.enable_grad():
            hs1, h_end = self.model.window(p, xs[n0:], h_mid)
            hs = hs1 if hs0 is None else torch.cat([hs0, hs1])
            objective = self.loss_sum(self.model.readout(p, hs), ys) * scale
            grads = torch.autograd.grad(objective, [p[n] for n in self.names], allow_unused=True)
        for n, g in zip(self.names, grads):
            if g is None:
                self.grads[n].zero_()
            else:
                self.grads[n].copy_(g)
        self.h.copy_(h_end)
        return objective.detach()

    def _gradients_manual(self, L: int, scale: float, xs: Tensor, ys: Tensor) -> Tensor:
        """Gradients by the hand-written backward over the sliding window of stored steps."""
        p, W = self.live, self.k2
        B, H = self.h.shape

        # Forward the segment with the current parameters: one fused kernel (cuDNN) where it
        # pays, else the input projection in one product and one addmm + activation per step.
        if self.fused_forward and L >= FUSED_MIN_STEPS:
            hs, _ = self.model.window(p, xs, self.h)
        else:
            xproj = (
                torch.addmm(p["b_h"], xs.reshape(L * B, -1), p["W_hx"].T)
                if "b_h" in p
                else xs.reshape(L * B, -1) @ p["W_hx"].T
            )
            xproj = xproj.reshape(L, B, H)
            hs = torch.empty(L, B, H, device=xs.device, dtype=xs.dtype)
            h = self.h
            for i in range(L):
                pre = torch.addmm(xproj[i], h, p["W_hh"].T)
                h = torch.tanh(pre, out=hs[i]) if self.tanh else hs[i].copy_(pre)
        h_prev = torch.cat([self.h.unsqueeze(0), hs[:-1]])
        dact = 1.0 - hs * hs if self.tanh else torch.ones_like(hs)
        self.h.copy_(hs[-1])

        # Readout and loss of the segment's own steps (every one of them, in or out of the window).
        o = self.model.readout(p, hs)
        g_o = self.loss_grad(o, ys) * scale
        objective = self.loss_sum(o, ys) * scale
        Q = g_o.shape[-1]
        g = self.grads
        torch.mm(g_o.reshape(-1, Q).T, hs.reshape(-1, H), out=g["W_qh"])
        if "b_q" in g:
            torch.sum(g_o, dim=(0, 1), out=g["b_q"])
        pull = g_o @ p["W_qh"]  # the readout's gradient into each h

        # Slide the window by L steps: keep the last W - L old slots, append the new steps.
        for buf, new in (
            (self.hp, h_prev),
            (self.da, dact),
            (self.xb, xs),
            (self.wb, p["W_hh"].expand(L, H, H)),
        ):
            if L >= W:
                buf.copy_(new[L - W :])
            else:
                buf[: W - L].copy_(buf[L:].clone())
                buf[W - L :].copy_(new)

        # Backward over the window, newest slot first (elman_backward): the own steps are the
        # newest min(L, W) slots; slot 0's predecessor is held constant. Slots before step 1
        # hold f' = 0, so they add exactly nothing.
        own = min(L, W)
        backward_steps(self.dpre, self.da, self.wb, None, pull=pull[max(L - W, 0) :], own_from=W - own)
        torch.mm(self.dpre.reshape(-1, H).T, self.hp.reshape(-1, H), out=g["W_hh"])
        torch.mm(self.dpre.reshape(-1, H).T, self.xb.reshape(-1, self.xb.shape[-1]), out=g["W_hx"])
        if "b_h" in g:
            torch.sum(self.dpre.reshape(-1, H), dim=0, out=g["b_h"])
        return objective

    def _clip_step_record(self, objective: Tensor) -> None:
        """Clip by global norm without reading it on the host (g <- min(1, clip/||g||) g), step,
        and write (objective, norm, clipped) to the record buffer."""
        norm, clipped = clip_by_global_norm_([self.grads[n] for n in self.names], self.clip)
        self.optimizer.step()
        torch.stack([objective.to(norm.dtype), norm, clipped], out=self.record)

    def _capture(self, L: int, scale: float, stream: torch.cuda.Stream) -> torch.cuda.CUDAGraph | None:
        """The update as a CUDA graph, captured on ``stream`` (where the warm-up ran, so its
        library handles exist), or None with ``capture_error`` set where capture fails. A failed
        capture executed nothing: every buffer still holds the last update's values. (Not
        ``torch.cuda.graph``: its synchronize and empty_cache cost more than a short pass.)"""
        graph = torch.cuda.CUDAGraph()
        stream.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(stream):
                graph.capture_begin()
                try:
                    self._update(L, scale)
                finally:
                    graph.capture_end()
        except RuntimeError as err:
            self.capture_error = f"{type(err).__name__}: {err}".splitlines()[0][:300]
            torch.cuda.synchronize()
            return None
        torch.cuda.current_stream().wait_stream(stream)
        self.captured = True
        return graph

    def _arange(self, L: int) -> Tensor:
        if L not in self._aranges:
            self._aranges[L] = torch.arange(L, device=self.x.device)
        return self._aranges[L]

    def saved_bytes(self, L: int) -> int:
        """Bytes held for backward at an update of L steps: the window's slots (state before each
        step, f', input) and the segment's states, readout pulls and output gradients."""
        B, H = self.h.shape
        per_elem = self.x.element_size()
        window = self.hp.numel() + self.da.numel() + self.xb.numel()
        return per_elem * (window + L * B * (2 * H + self.model.output_size))

    # -- the loop -----------------------------------------------------------------------------

    def run(self, callback: Callable[[UpdateRecord], None] | None = None) -> TrainResult:
        """Every update of ``inputs.updates`` (see ``Path``); engine_path names the variant that ran:
        "cuda-graph-elman" where a graph was captured, else "static-elman", then "/fused-window"
        (autograd through the fused kernel) and "+stored-history" where they apply."""
        inp = self.inputs
        segments = [u - prev for prev, u in inp.updates]
        B = inp.batch

        def to_record(i: int, row) -> UpdateRecord:
            loss_value, norm, clipped = row.tolist()
            prev, u = inp.updates[i]
            bwd = backprop_steps(prev, u, max(u - self.k2, 0), B, None)  # every edge kept: min(k2, u) B
            return UpdateRecord(u, loss_value, norm, bool(clipped), forward_steps(prev, u, B), bwd)

        on_update = None if callback is None else (lambda i, row: callback(to_record(i, row)))
        meter = SavedTensorMeter() if inp.measure_memory and self.autograd_window else None
        with meter if meter else nullcontext():
            rows = self._run_updates(segments, on_update)
        records = [to_record(i, row) for i, row in enumerate(rows)]
        name = (
            ("cuda-graph-elman" if self.captured else "static-elman")
            + ("/fused-window" if self.autograd_window else "")
            + ("+stored-history" if inp.stored_history else "")
        )
        saved = None
        if inp.measure_memory:
            saved = meter.peak_bytes if meter else self.saved_bytes(max(segments))
        reason = None if self.capture_error is None else f"CUDA graph capture failed: {self.capture_error}"
        return TrainResult(records, self.h.clone(), name, saved, reason)

    def _run_updates(self, segments: list[int], callback: Callable[[int, Tensor], None] | None) -> Tensor:
        """Perform one update per segment length in ``segments``; ``callback(i, record)`` after
        update i (the record as a CPU tensor; costs a device sync per update)."""
        for n, p in self.live.items():
            p.grad = self.grads[n]  # the optimizer reads these buffers
        out = torch.empty(len(segments), 3, dtype=self.x.dtype, device=self.x.device)
        graph = None
        full = [i for i, L in enumerate(segments) if L == self.k1]
        capture_at = full[WARMUP_UPDATES] if self.capture and len(full) > WARMUP_UPDATES + 1 else None
        side = torch.cuda.Stream(device=self.x.device) if capture_at is not None else None
        try:
            for i, L in enumerate(segments):
                scale = 1.0 / (self.per_step * L)
                if graph is not None and L == self.k1:
                    graph.replay()
                elif i == capture_at:
                    graph = self._capture(L, scale, side)
                    if graph is None:  # capture failed: this update, and
                        self._update(L, scale)  # the rest, run eagerly
                    else:
                        graph.replay()  # capture only records; replay runs it
                elif side is not None and i < capture_at:
                    side.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(side):  # warm-up off the capture's stream
                        self._update(L, scale)
                    torch.cuda.current_stream().wait_stream(side)
                else:
                    self._update(L, scale)
                out[i].copy_(self.record)
                if callback is not None:
                    callback(i, out[i].cpu())
        finally:
            for p in self.live.values():
                p.grad = None
        return out.double().cpu()
