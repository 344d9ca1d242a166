"""Batched LoRA routing: every row of a mixed batch gets its own adapter inside each LoRA layer.

Two ways, picked per forward pass:

* Batched (plain LoRA adapters, the common case): peft's layers compute only the
  base, and a forward hook adds every row's LoRA term with two matmuls per layer,
  whatever the number of adapters in the batch: the adapters' ``lora_A`` stacked
  (r1+r2+... rows), a one-hot mask that keeps each row's own rank columns, the
  stacked ``lora_B``, then each row's scaling. peft's ``adapter_names`` path
  instead slices the batch and runs two small matmuls per adapter per layer, so its
  cost grows with the number of adapters in the batch (docs/performance.md, Serving
  on CPU). The stacks are kept while the batch's set of adapters stays the same.
* peft's own mixed-batch path (``adapter_names=``) for adapters that compute more
  than weights x scaling (DoRA, LoRA bias, modules_to_save, embeddings, ...):
  ``PeftModel.forward(adapter_names=...)`` would register and remove a pre-forward
  hook on every LoRA layer at every call, so the same hook is kept registered here.

Only the scheduler thread runs forward passes, so one "current rows" slot is enough.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from peft.tuners.lora import LoraLayer
from peft.tuners.lora.layer import Linear as LoraLinear
from peft.utils.other import AuxiliaryTrainingWrapper

from backend.serving.requests import BASE_ROW

_NO_LORA = ("none",)  # a layer entry: no adapter of the batch targets this layer


class AdapterRouting:
    """The hooks that apply each row's adapter; :meth:`rows` names the rows of one pass."""

    def __init__(self, peft_model):
        self._names: list[str] | None = None  # peft path: the rows' adapter names
        self._plan: tuple | None = None  # batched path: (rows' names, adapters in order, per-pass cache)
        self._layers: dict = {}  # layer id -> what it adds for the current set of adapters (_layer_entry)
        self._layers_for: tuple | None = None
        self._handles: list = []
        self.rebuild(peft_model)

    def rebuild(self, peft_model) -> None:
        """Hook every LoRA layer of ``peft_model`` (after peft added or removed modules)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for module in peft_model.modules():
            if isinstance(module, (LoraLayer, AuxiliaryTrainingWrapper)):
                self._handles.append(module.register_forward_pre_hook(self._inject, with_kwargs=True))
            if isinstance(module, LoraLinear):
                self._handles.append(module.register_forward_hook(self._add_lora))
        self.invalidate()

    def invalidate(self) -> None:
        """Forget stacked weights: some adapter's tensors changed (a slot was filled)."""
        self._layers = {}
        self._layers_for = None

    @contextmanager
    def rows(self, names: list[str], *, batched: bool):
        """Within this block, forward passes give row i the adapter ``names[i]``."""
        if batched:
            adapters = tuple(dict.fromkeys(n for n in names if n != BASE_ROW))
            key = (adapters, len(set(names)) == 1)  # "one adapter for every row" is a layer entry of its own
            if key != self._layers_for:  # another set of adapters: drop the old entries
                self._layers, self._layers_for = {}, key
            self._plan = (list(names), adapters, {}) if adapters else None
        else:
            self._names = list(names)
        try:
            yield
        finally:
            self._names = None
            self._plan = None

    def _inject(self, module, args, kwargs):
        if self._names is not None:
            kwargs["adapter_names"] = self._names
        return args, kwargs

    def _add_lora(self, module, args, output):
        plan = self._plan
        if plan is None:
            return None
        names, adapters, per_pass = plan
        entry = self._layers.get(id(module))
        if entry is None:  # first pass with this set of adapters: what this layer computes
            entry = self._layers[id(module)] = _layer_entry(module, names, adapters)
        if entry is _NO_LORA:
            return None
        x = args[0]
        cast = per_pass.get("x")  # q/k/v (and gate/up) share their input: cast it once
        if cast is None or cast[0] is not x or cast[1].dtype != entry[1].dtype:
            cast = per_pass["x"] = (x, x.to(entry[1].dtype))
        x = cast[1]
        if entry[0] == "one":
            # one adapter for every row: peft's own single-adapter computation, summed in
            # the adapter's dtype and rounded once into the base's output (in place: same numbers)
            _, lora_a, lora_b, scaling = entry
            return output.add_(F.linear(F.linear(x, lora_a), lora_b) * scaling)
        _, a_stack, b_stack, layout = entry
        masks = per_pass.get(layout)
        if masks is None:
            masks = per_pass[layout] = _row_masks(module, names, layout[0], a_stack)
        one_hot, scale = masks
        delta = F.linear(x, a_stack) * one_hot
        return output.add_(F.linear(delta, b_stack) * scale)


def _layer_entry(module, names, adapters):
    """What layer ``module`` adds for a batch of ``adapters``, its weights stacked once per set."""
    present = tuple(a for a in adapters if a in module.lora_A)
    if not present:
        return _NO_LORA
    if len(present) == 1 and all(n == present[0] for n in names):
        name = present[0]
        return ("one", module.lora_A[name].weight, module.lora_B[name].weight, module.scaling[name])
    if len(present) == 1:
        stacks = (module.lora_A[present[0]].weight, module.lora_B[present[0]].weight)
    else:
        stacks = (torch.cat([module.lora_A[a].weight for a in present], dim=0),
                  torch.cat([module.lora_B[a].weight for a in present], dim=1))
    # layers share masks when their adapters' ranks and scalings agree (rank/alpha patterns may differ)
    layout = (present, tuple((module.lora_A[a].weight.shape[0], module.scaling[a]) for a in present))
    return ("mixed", *stacks, layout)


def _row_masks(module, names, present, a_stack):
    """Per row: a 0/1 mask over the stacked rank columns, and the row's adapter scaling."""
    spans, at = {}, 0
    for name in present:
        rank = module.lora_A[name].weight.shape[0]
        spans[name] = (at, at + rank)
        at += rank
    one_hot = torch.zeros(len(names), 1, at, dtype=a_stack.dtype)
    scale = torch.zeros(len(names), 1, 1, dtype=a_stack.dtype)
    for row, name in enumerate(names):
        if name in spans:
            lo, hi = spans[name]
            one_hot[row, 0, lo:hi] = 1
            scale[row, 0, 0] = module.scaling[name]
    # built on the CPU element by element, then moved once (a GPU write per element would sync each time)
    return one_hot.to(a_stack.device), scale.to(a_stack.device)
