"""Count the bytes autograd keeps for backward, live, and remember the peak.

A device-independent activation-memory figure: the allocator's peak on CUDA and peak RSS on
the CPU both include parameters, optimizer state and allocator slack; this counts only what
the recorded graphs hold. Tensors saved twice (same storage, offset and size) count once;
parameters and other leaves that require grad are not activations and are left out.

>>> import torch
>>> w = torch.randn(3, 3, requires_grad=True)
>>> with SavedTensorMeter() as meter:
...     y = (torch.ones(5, 3) @ w).tanh().sum()     # saves ones (60 B) and tanh's output (60 B)
>>> meter.peak_bytes
120
>>> del y
>>> meter.live_bytes
0
"""

from __future__ import annotations

import weakref

import torch


class _Handle:
    """Stands in for a saved tensor; the count drops when autograd frees it."""

    __slots__ = ("__weakref__", "tensor")

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


class SavedTensorMeter:
    """Context manager: ``live_bytes`` now, ``peak_bytes`` since entry (bytes)."""

    def __init__(self) -> None:
        self.live_bytes = 0
        self.peak_bytes = 0
        self._refs: dict[tuple, int] = {}
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _release(self, key: tuple, nbytes: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            self.live_bytes -= nbytes

    def _pack(self, t: torch.Tensor):
        if t.is_leaf and t.requires_grad:
            return t
        nbytes = t.numel() * t.element_size()
        key = (t.device, t.data_ptr(), nbytes)
        if key not in self._refs:
            self._refs[key] = 0
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        self._refs[key] += 1
        handle = _Handle(t.detach())  # detached: keeping t itself would tie a cycle through its grad_fn
        weakref.finalize(handle, self._release, key, nbytes)
        return handle

    @staticmethod
    def _unpack(h):
        return h.tensor if isinstance(h, _Handle) else h

    def __enter__(self) -> SavedTensorMeter:
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)
