"""oneDNN weight prepacking for the serving endpoint's bf16 Linear layers on CPU.

A bf16 ``F.linear`` on CPU hands a plain (out x in) weight to oneDNN, which reorders
it into its blocked layout at *every* call before multiplying. Serving multiplies few
rows (a decode step: one row per request; a prefill: the prompt's tokens), so that
reorder, a full read and write of the weight, costs about as much as the product itself
(measured in docs/performance.md, Serving on CPU). Prepacking reorders each weight once,
as PyTorch's inductor does for frozen CPU models (``mkldnn._reorder_linear_weight`` +
``mkldnn._linear_pointwise``).

The products must be bit-for-bit those of ``F.linear``, so that greedy output still equals
plain peft's. That holds only where both take the same kernel, and oneDNN picks its kernel
by the number of rows: on a CPU with AMX, ``F.linear`` moves to AMX tiles above 32 rows
while a weight packed for one row stays on the AVX-512 kernel, and the two round
differently. So each weight shape is checked once, at every row count from 1 to
``max_rows`` (a decode step's rows: the engine's batch), against ``F.linear``: a call
with no more rows than the count up to which every product was equal takes the packed
weight, a larger one (a prefill) takes ``F.linear``, and a shape that differs already at
one row is not packed. The base never changes while served, so the packed copy never goes
stale. It costs a second copy of every packed weight in memory;
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


_ROWS = "_tunelab_packed_rows"  # the most rows a call may have and take the packed weight


def _packed_forward(self, x):
    packed = getattr(self, _PACKED)
    if (x.dtype is not torch.bfloat16 or x.device.type != "cpu" or torch.is_grad_enabled()
            or x.numel() > getattr(self, _ROWS) * x.shape[-1]):
        return torch.nn.functional.linear(x, self.weight, self.bias)
    return packed_linear(x.contiguous(), packed, self.bias)


def exact_rows(weight, bias, packed, max_rows: int) -> int:
    """The largest ``m`` <= ``max_rows`` such that the packed product equals ``F.linear``
    bit for bit at every row count from 1 to ``m`` (random rows: the same kernel gives the
    same bits for any input, another kernel differs on random ones)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for rows in range(1, max_rows + 1):
            x = torch.randn(rows, weight.shape[1], generator=generator).to(torch.bfloat16)
            if not torch.equal(packed_linear(x, packed, bias), torch.nn.functional.linear(x, weight, bias)):
                return rows - 1
    return max_rows


def prepack_linears(model, max_rows: int = 16) -> int:
    """Pack the bf16 CPU ``nn.Linear`` modules of ``model`` once, for calls of at most
    ``max_rows`` rows (fewer where :func:`exact_rows` says so; a shape exact at no row count
    stays unpacked); the number packed (0 if unavailable).

    Call it before peft wraps the model: peft keeps each wrapped Linear as its
    ``base_layer`` and calls it, so the packed forward stays in use under every adapter.
    """
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear
               and m.weight.dtype is torch.bfloat16 and m.weight.device.type == "cpu"]
    if not linears or not available():
        return 0
    checked: dict[tuple, int] = {}  # (out, in, has bias) -> rows the packed product is exact for
    count = 0
    with torch.no_grad():
        for module in linears:
            if is_packed(module):
                count += 1
                continue
            packed = pack_weight(module.weight.detach())
            shape = (*module.weight.shape, module.bias is not None)
            if shape not in checked:
                checked[shape] = exact_rows(module.weight.detach(), module.bias, packed, max_rows)
            if checked[shape] == 0:
                continue
            setattr(module, _PACKED, packed)
            setattr(module, _ROWS, checked[shape])
            module.forward = types.MethodType(_packed_forward, module)
            count += 1
    return count


def is_packed(module) -> bool:
    return getattr(module, _PACKED, None) is not None
