"""oneDNN weight prepacking for the serving endpoint's bf16 Linear layers on CPU.

A bf16 ``F.linear`` on CPU hands a plain (out x in) weight to oneDNN, which reorders
it into its blocked layout at *every* call before multiplying. Serving multiplies few
rows (a decode step: one row per request; a prefill: the prompt's tokens), so that
reorder, a full read and write of the weight, costs about as much as the product itself
(measured in docs/performance.md, Serving on CPU). Prepacking reorders each weight once,
as PyTorch's inductor does for frozen CPU models (``mkldnn._reorder_linear_weight`` +
``mkldnn._linear_pointwise``).

The products are bit-for-bit those of ``F.linear`` (same kernel, same blocking), so
greedy output still equals plain peft's. The base never changes while served, so the
packed copy never goes stale. It costs a second copy of every Linear weight in memory;
``TUNELAB_SERVE_PREPACK=false`` turns it off.

CPU training packs its LM head with the same two functions (:func:`pack_weight`,
:func:`packed_linear`).

Only exact ``torch.nn.Linear`` modules in bf16 on CPU are packed; a call with another
dtype, device or with autograd recording falls back to ``F.linear`` on the plain weight.
"""

from __future__ import annotations

import functools
import types

import torch
from torch.utils._python_dispatch import _disable_current_modes

_PACKED = "_tunelab_packed_weight"


def pack_weight(weight, rows_hint: int = 1):
    """``weight`` (out x in) reordered once into oneDNN's blocked layout, for
    :func:`packed_linear`; ``rows_hint`` is the expected number of rows per call."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint)


def packed_linear(x, packed, bias=None):
    """``F.linear(x, weight, bias)`` against the packed ``weight`` (contiguous ``x``)."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


@functools.cache
def available() -> bool:
    """True when this torch build has oneDNN's packed linear and it gives F.linear's numbers
    (checked once per process).

    The probe runs outside any dispatch mode its first caller may be inside: a packed
    weight is an opaque tensor that such a mode cannot read, and the answer, cached for
    the whole process, would otherwise say "no" for the rest of it.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    with _disable_current_modes():
        try:
            weight = torch.randn(24, 16).to(torch.bfloat16)
            x = torch.randn(3, 16).to(torch.bfloat16)
            got = packed_linear(x, pack_weight(weight))
        except (AttributeError, RuntimeError, NotImplementedError):
            return False
        return torch.equal(got, torch.nn.functional.linear(x, weight))


def _packed_forward(self, x):
    packed = getattr(self, _PACKED)
    if x.dtype is not torch.bfloat16 or x.device.type != "cpu" or torch.is_grad_enabled():
        return torch.nn.functional.linear(x, self.weight, self.bias)
    return packed_linear(x.contiguous(), packed, self.bias)


def prepack_linears(model) -> int:
    """Pack every bf16 CPU ``nn.Linear`` of ``model`` once; the number packed (0 if unavailable).

    Call it before peft wraps the model: peft keeps each wrapped Linear as its
    ``base_layer`` and calls it, so the packed forward stays in use under every adapter.
    """
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear
               and m.weight.dtype is torch.bfloat16 and m.weight.device.type == "cpu"]
    if not linears or not available():
        return 0
    with torch.no_grad():
        for module in linears:
            if getattr(module, _PACKED, None) is None:
                setattr(module, _PACKED, pack_weight(module.weight.detach()))
                module.forward = types.MethodType(_packed_forward, module)
    return len(linears)


def is_packed(module) -> bool:
    return getattr(module, _PACKED, None) is not None
