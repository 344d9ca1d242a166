"""Preallocated LoRA slots: hot swaps that copy tensors instead of rebuilding modules.

Loading an adapter with peft (``PeftModel.load_adapter``) walks every module of the
base, wraps the targets and builds new ``lora_A``/``lora_B`` layers, and it must hold
the model between two decode steps (docs/performance.md says how long each path takes).
Most adapters a server sees share one shape (same target modules, same rank), so the engine keeps
adapters of a shape it has seen already *injected* as peft adapters ("slots") and
reuses them (the design of S-LoRA, vLLM and LoRAX): a swap reads the safetensors,
``copy_``s each tensor into the free slot's parameters, sets each module's scaling
and flips the public name to the slot. No module is created or removed, so nothing
waits for the scheduler: a free slot is named by no request, so no forward pass reads
it while it is filled.

A slot's *signature* is every LoRA tensor's saved key and shape plus the config
fields that change how the layers compute. An adapter fits a free slot only when the
signatures are equal, so every tensor of the slot is overwritten: nothing of the
previous adapter survives. Adapters that change the forward beyond weights and
scaling (DoRA, LoRA bias, modules_to_save, trainable tokens, ...) never use slots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft.tuners.lora import LoraLayer
from peft.tuners.lora.layer import Linear as LoraLinear
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file

from backend.adapter_folder import LoraConfigView, base_module_name

# Config fields that add modules or change the layer's computation: such adapters take peft's path.
_UNSLOTTABLE_FIELDS = ("use_dora", "lora_bias", "modules_to_save", "layer_replication",
                       "trainable_token_indices", "target_parameters", "use_qalora",
                       "alora_invocation_tokens", "arrow_config")


@dataclass
class Slot:
    """One injected peft adapter whose tensors can be overwritten by a matching adapter."""

    name: str  # the peft adapter name
    signature: tuple
    tensors: dict[str, Any]  # saved key (as in adapter_model.safetensors) -> tensor sharing the parameter
    layers: list[tuple[str, Any]]  # (module key as peft's patterns see it, LoRA layer)


@dataclass
class SlotPool:
    """Free and used slots by signature. The engine guards it with its own lock."""

    spare: int = 2  # free slots to keep ready per signature seen
    max_free: int = 4  # free slots beyond this are deleted
    slots: dict[str, Slot] = field(default_factory=dict)
    free: dict[tuple, list[Slot]] = field(default_factory=dict)
    filling: set = field(default_factory=set)  # signatures whose spares are being prepared

    def take(self, signature: tuple) -> Slot | None:
        free = self.free.get(signature)
        return free.pop() if free else None

    def give_back(self, slot: Slot) -> bool:
        """Return ``slot`` to the pool; False when the pool is full and it should be deleted."""
        free = self.free.setdefault(slot.signature, [])
        if len(free) >= self.max_free:
            self.slots.pop(slot.name, None)
            return False
        free.append(slot)
        return True

    def add(self, slot: Slot, *, free: bool) -> None:
        self.slots[slot.name] = slot
        if free:
            self.free.setdefault(slot.signature, []).append(slot)

    def missing_spares(self, signature: tuple) -> int:
        return max(0, self.spare - len(self.free.get(signature, [])))


def plain_config(config: dict) -> bool:
    """True for LoRA whose layers compute only ``B(A(x)) * scaling``."""
    return (str(config.get("peft_type", "LORA")).upper() == "LORA"
            and not any(config.get(name) for name in _UNSLOTTABLE_FIELDS))


def batchable(peft_model, name: str, config: dict) -> bool:
    """True when adapter ``name`` lives only in plain LoRA Linear layers (the engine's batched path)."""
    if not plain_config(config):
        return False
    for module in peft_model.modules():
        if not isinstance(module, LoraLayer):
            continue
        holds = any(name in getattr(module, attr, {}) for attr in
                    ("lora_A", "lora_embedding_A", "lora_magnitude_vector", "lora_variant"))
        if not holds:
            continue
        if type(module) is not LoraLinear or name not in module.lora_A or name in module.lora_variant:
            return False
        if getattr(module, "lora_bias", {}).get(name, False):
            return False
    return True


def file_signature(path: Path, config: dict) -> tuple | None:
    """The slot signature of the adapter folder ``path``, or None if it cannot use a slot."""
    if not plain_config(config):
        return None
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        return None
    with safe_open(str(weights), framework="pt") as fh:
        shapes = tuple(sorted((key, tuple(fh.get_slice(key).get_shape())) for key in fh.keys()))
    return (shapes, bool(config.get("fan_in_fan_out", False)))


def slot_from_adapter(peft_model, name: str, signature: tuple) -> Slot | None:
    """Describe the injected peft adapter ``name`` as a slot; None if it does not match ``signature``.

    Only adapters the engine can batch (plain LoRA Linear layers) become slots.
    """
    if not batchable(peft_model, name, {}):
        return None

    state = get_peft_model_state_dict(peft_model, adapter_name=name, save_embedding_layers=False)
    shapes = tuple(sorted((key, tuple(t.shape)) for key, t in state.items()))
    if shapes != signature[0]:
        return None
    layers = []
    for module_name, module in peft_model.named_modules():
        scaling = getattr(module, "scaling", None)
        if isinstance(scaling, dict) and name in scaling:
            if name in getattr(module, "lora_variant", {}):
                return None  # DoRA and friends compute more than weights x scaling
            layers.append((base_module_name(module_name), module))
    # state dict tensors are detached views: writing them must write the parameters themselves
    pointers = {p.data_ptr() for p in peft_model.parameters()}
    if not all(t.data_ptr() in pointers for t in state.values()):
        return None
    return Slot(name=name, signature=signature, tensors=state, layers=layers)


def read_weights(path: Path) -> dict:
    """The adapter's tensors, read from disk (no lock held: the caller's thread does this)."""
    return load_file(str(path / "adapter_model.safetensors"))


def fill(slot: Slot, weights: dict, config: dict) -> None:
    """Overwrite every tensor of ``slot`` with ``weights`` and set each layer's scaling.

    Scaling follows peft's own rule (rank/alpha patterns matched by module key, rsLoRA
    divides by the square root of the rank), so a filled slot computes exactly what
    ``PeftModel.load_adapter`` of the same folder computes.
    """
    if set(weights) != set(slot.tensors):
        raise ValueError("the adapter's tensors do not match the slot's")
    # inference mode: slots made by the scheduler thread (which runs under it) hold inference tensors
    with torch.inference_mode():
        for key, target in slot.tensors.items():
            target.copy_(weights[key])
    view = LoraConfigView.model_validate(config)
    for key, module in slot.layers:
        r = view.rank_of(key)
        if module.r.get(slot.name) != r:
            raise ValueError(f"module {key} has rank {module.r.get(slot.name)} in the slot, the config says {r}")
        module.lora_alpha[slot.name] = view.alpha_of(key)
        if hasattr(module, "use_rslora"):
            module.use_rslora[slot.name] = view.use_rslora
        module.scaling[slot.name] = view.scaling_of(key, r)
