"""The adapters an engine serves: load, in-place swap, unload, and when their weights go.

Hot swap without failed requests: each adapter is loaded under its own internal peft
name, and a request binds to that internal name when it is submitted
(:meth:`AdapterRegistry.bind`). ``load_inplace`` loads the new weights under another
internal name, then switches the public name to it; the old weights are *retired* and
released only once no request in flight uses them.

Fast swaps: an adapter whose shape was seen before is copied into a free preallocated
slot (:mod:`backend.serving.slots`) in the caller's thread; the first adapter of a shape
takes peft's ``load_adapter`` path, which changes the model's modules and so runs in the
scheduler thread between two decode steps (the ``between_steps`` the engine hands in).
After it, spare slots of that shape are prepared in a background thread.

Before anything touches the model, an adapter trained for another base or shape is
refused with the reason (:meth:`AdapterRegistry.check_fits`).

An adapter trained behind a system prompt (``train.system_prompt`` in its
``tunelab.json``, read once at load) is asked behind it: :meth:`AdapterRegistry.system_prompt`
is what the engine puts first in a chat request to it that brings no system message.
"""

from __future__ import annotations

import copy
import itertools
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from peft import LoraConfig, get_peft_model
from safetensors import safe_open

from backend.adapter_folder import AdapterMeta, base_key, read_peft_config
from backend.errors import AdapterMismatch, AdapterNotFound
from backend.serving.requests import BASE_ROW, error_text
from backend.serving.routing import AdapterRouting
from backend.serving.slots import Slot, SlotPool, batchable, file_signature, fill, read_weights, slot_from_adapter
from backend.serving.stats import EngineStats

log = logging.getLogger("tunelab.engine")

IDLE_ADAPTER = "tunelab_idle"  # a zero, one-module adapter so the PeftModel exists with none loaded


@dataclass
class AdapterInfo:
    name: str
    path: str
    internal: str
    config: dict
    loaded_at: float
    slot: bool = False  # copied into a preallocated slot (fast path) rather than injected by peft
    system_prompt: str | None = None  # train.system_prompt of its tunelab.json: what it was trained behind


def linear_shapes(model) -> dict[str, tuple[int, int]]:
    """(in, out) features of every linear/embedding module, by name, for adapter shape checks.

    Read it before peft wraps the model: the names are the base's own."""
    shapes = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            shapes[name] = (module.in_features, module.out_features)
        elif type(module).__name__ == "Conv1D":
            shapes[name] = tuple(module.weight.shape)  # Conv1D stores (in, out)
        elif isinstance(module, torch.nn.Embedding):
            shapes[name] = (module.num_embeddings, module.embedding_dim)
    return shapes


def wrap_for_adapters(model):
    """``model`` as a ``PeftModel`` that holds no adapter yet (only the idle one), in eval mode."""
    idle = LoraConfig(r=1, lora_alpha=1, target_modules=[_first_linear_name(model)],
                      init_lora_weights=True, inference_mode=True)
    peft_model = get_peft_model(model, idle, adapter_name=IDLE_ADAPTER)
    peft_model.eval()
    return peft_model


class AdapterRegistry:
    """The public adapter names, their internal peft adapters, the requests using each, and the slots.

    ``lock`` guards the table, the counts and the slot pool; it is taken last (never
    held while waiting for the scheduler), so the engine may take it under its own locks.
    """

    def __init__(self, model, routing: AdapterRouting, shapes: dict[str, tuple[int, int]], *,
                 base_name: str, base_path: str, stats: EngineStats,
                 between_steps: Callable[[Callable[[], Any]], Any], stopping: Callable[[], bool],
                 spare_slots: int = 2, max_free_slots: int = 4):
        self.model = model
        self.base_name = base_name
        self.base_path = base_path
        self.lock = threading.RLock()
        self.slots = SlotPool(spare=spare_slots, max_free=max(max_free_slots, spare_slots))
        self.peft_routed: set[str] = set()  # adapters that need peft's mixed-batch path
        self._routing = routing
        self._shapes = shapes
        self._stats = stats
        self._between_steps = between_steps
        self._stopping = stopping
        self._adapters: dict[str, AdapterInfo] = {}
        self._refcount: dict[str, int] = {}
        self._retired: set[str] = set()
        self._spare_threads: list[threading.Thread] = []
        self._internal_ids = itertools.count(1)

    # --- names ------------------------------------------------------------------------------

    def adapters(self) -> dict[str, AdapterInfo]:
        with self.lock:
            return dict(self._adapters)

    def resolve(self, model: str | None) -> str | None:
        """None for the base; the adapter name otherwise; :class:`AdapterNotFound` if unknown."""
        if model in (None, "", self.base_name, BASE_ROW):
            return None
        with self.lock:
            if model in self._adapters:
                return model
            known = [self.base_name, *self._adapters]
        raise AdapterNotFound(model, known)

    def system_prompt(self, adapter: str | None) -> str | None:
        """The system prompt ``adapter`` was trained behind (None for the base and for
        adapters trained without one); :class:`AdapterNotFound` if unknown."""
        if adapter is None:
            return None
        with self.lock:
            if adapter in self._adapters:
                return self._adapters[adapter].system_prompt
            known = [self.base_name, *self._adapters]
        raise AdapterNotFound(adapter, known)

    def bind(self, adapter: str | None) -> str:
        """The internal name a new request for ``adapter`` (None: the base) runs with; its
        weights stay until :meth:`release`."""
        with self.lock:
            if adapter is None:
                internal = BASE_ROW
            elif adapter in self._adapters:
                internal = self._adapters[adapter].internal
            else:
                raise AdapterNotFound(adapter, [self.base_name, *self._adapters])
            self._refcount[internal] = self._refcount.get(internal, 0) + 1
        return internal

    def release(self, internal: str) -> None:
        """A request bound to ``internal`` finished."""
        with self.lock:
            self._refcount[internal] -= 1

    def needs_peft_path(self, internals: list[str]) -> bool:
        """True when some row's adapter computes more than weights x scaling (peft's mixed-batch path)."""
        return bool(self.peft_routed.intersection(internals))

    # --- loading and unloading ---------------------------------------------------------------

    def load(self, name: str, path: str | Path, *, inplace: bool = False) -> AdapterInfo:
        """Load the PEFT LoRA folder ``path`` as ``name``; refuse what does not fit this base.

        With ``inplace`` an adapter already loaded as ``name`` is replaced atomically:
        requests already submitted finish on the old weights, new ones get the new.
        """
        path = Path(path).expanduser().resolve()
        with self.lock:
            if name in self._adapters and not inplace:
                raise AdapterMismatch(
                    f"An adapter named {name!r} is already loaded (from {self._adapters[name].path}).",
                    fix="Pass load_inplace=true to replace it, or unload it first.")
            if name == self.base_name:
                raise AdapterMismatch(f"{name!r} is the base model's name; pick another adapter name.")
        config = read_peft_config(path)
        system_prompt = _trained_system_prompt(path)
        self.check_fits(path, config)
        started = time.perf_counter()
        signature = file_signature(path, config)
        internal = self._load_into_slot(path, config, signature) if signature is not None else None
        in_slot = internal is not None
        if internal is None:
            internal = self._load_with_peft(path, name, config, signature)
        info = AdapterInfo(name=name, path=str(path), internal=internal, config=config, loaded_at=time.time(),
                           slot=in_slot, system_prompt=system_prompt)
        with self.lock:
            old = self._adapters.get(name)
            self._adapters[name] = info
            if old is not None:
                self._retired.add(old.internal)
        self._stats.loads += 1
        log.info("loaded adapter %s from %s in %.3fs (%s)", name, path, time.perf_counter() - started,
                 "slot" if in_slot else "peft")
        self.collect_retired()
        if signature is not None:
            self._prepare_spares(signature)
        return info

    def unload(self, name: str) -> AdapterInfo:
        """Forget ``name``; its weights go once the requests using them have finished."""
        with self.lock:
            info = self._adapters.pop(name, None)
            if info is None:
                raise AdapterNotFound(name, list(self._adapters))
            self._retired.add(info.internal)
        self.collect_retired()
        return info

    def collect_retired(self) -> None:
        """Release retired adapter weights that no request uses any more."""
        with self.lock:
            ready = [n for n in self._retired if self._refcount.get(n, 0) == 0]
            self._retired.difference_update(ready)
        for internal in ready:
            with self.lock:
                slot = self.slots.slots.get(internal)
            if slot is not None:
                self._release_slot(slot)  # back to the pool: no module changes, no waiting
            else:
                self._between_steps(lambda internal=internal: self._drop_internal(internal))

    def _load_into_slot(self, path: Path, config: dict, signature: tuple) -> str | None:
        """Copy the adapter into a free slot of its signature; None when there is none.

        Runs in the caller's thread, not the scheduler's: the free slot is named by no
        request, so no forward pass reads the tensors being overwritten.
        """
        with self.lock:
            slot = self.slots.take(signature)
        if slot is None:
            return None
        try:
            fill(slot, read_weights(path), config)
            self._routing.invalidate()
        except Exception as exc:  # unreadable file or a config that contradicts its tensors
            self._release_slot(slot)
            raise AdapterMismatch(
                f"Adapter {str(path)!r} does not fit base {self.base_name!r}: {error_text(exc)}",
                fix="Load an adapter trained for this base.") from exc
        self._stats.slot_loads += 1
        return slot.name

    def _load_with_peft(self, path: Path, name: str, config: dict, signature: tuple | None) -> str:
        """peft's own load_adapter (module injection, between steps); keeps the result as a slot."""
        internal = f"a{next(self._internal_ids)}_{re.sub(r'[^a-zA-Z0-9_]', '_', name)}"

        def inject() -> None:
            try:
                self.model.load_adapter(str(path), adapter_name=internal, low_cpu_mem_usage=True)
                self.model.eval()
                self._routing.rebuild(self.model)
            except Exception as exc:  # peft raises RuntimeError/ValueError/KeyError for bad folders
                self._drop_internal(internal)
                raise AdapterMismatch(
                    f"Adapter {str(path)!r} does not fit base {self.base_name!r}: {error_text(exc)}",
                    fix="Load an adapter trained for this base.") from exc
            if not batchable(self.model, internal, config):
                self.peft_routed.add(internal)
            slot = slot_from_adapter(self.model, internal, signature) if signature is not None else None
            if slot is not None:
                with self.lock:
                    self.slots.add(slot, free=False)

        self._between_steps(inject)
        return internal

    def _release_slot(self, slot: Slot) -> None:
        with self.lock:
            kept = self.slots.give_back(slot)
        if not kept:
            self._between_steps(lambda: self._drop_internal(slot.name))

    def _drop_internal(self, internal: str) -> None:
        """Delete the peft adapter ``internal`` (in the scheduler thread, between steps)."""
        with self.lock:
            self.slots.slots.pop(internal, None)
        self.peft_routed.discard(internal)
        self._routing.invalidate()
        if internal in self.model.peft_config:
            try:
                self.model.delete_adapter(internal)
            except Exception:  # a half-loaded adapter: nothing more to free
                log.exception("could not delete adapter %s", internal)
                self.model.peft_config.pop(internal, None)
            # deleting the active adapter makes peft pick another; keep the idle one active
            self.model.base_model._active_adapter = [IDLE_ADAPTER]

    # --- spare slots -------------------------------------------------------------------------

    def _prepare_spares(self, signature: tuple) -> None:
        """Top up the free slots of ``signature`` in a background thread, off the request path."""
        with self.lock:
            missing = self.slots.missing_spares(signature)
            if missing == 0 or signature in self.slots.filling:
                return
            template = next((s.name for s in self.slots.slots.values() if s.signature == signature), None)
            if template is None:
                return
            self.slots.filling.add(signature)
            self._spare_threads = [t for t in self._spare_threads if t.is_alive()]
            thread = threading.Thread(target=self._make_spares, args=(signature, template, missing),
                                      name="tunelab-spare-slots", daemon=True)
            self._spare_threads.append(thread)
        thread.start()

    def _make_spares(self, signature: tuple, template: str, count: int) -> None:
        try:
            for _ in range(count):
                if self._stopping():
                    return
                name = f"slot{next(self._internal_ids)}"

                def create(name=name) -> Slot | None:
                    config = copy.deepcopy(self.model.peft_config[template])
                    config.inference_mode = True
                    self.model.add_adapter(name, config)
                    self.model.eval()
                    self._routing.rebuild(self.model)
                    self.model.base_model._active_adapter = [IDLE_ADAPTER]
                    slot = slot_from_adapter(self.model, name, signature)
                    if slot is None:
                        self._drop_internal(name)
                    return slot

                slot = self._between_steps(create)
                if slot is None:
                    log.warning("spare slots for adapter %s's shape are not possible", template)
                    return
                with self.lock:
                    self.slots.add(slot, free=True)
        except Exception:  # the template went away, or peft refused: swaps take peft's path
            log.exception("could not prepare a spare slot like %s", template)
        finally:
            with self.lock:
                self.slots.filling.discard(signature)

    def preparing_spares(self) -> bool:
        """True while a background thread prepares spare slots."""
        with self.lock:
            return any(t.is_alive() for t in self._spare_threads)

    def wait_for_spares(self, timeout: float = 60.0) -> None:
        """Block until background slot preparation is done (benchmarks and tests)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                threads = [t for t in self._spare_threads if t.is_alive()]
            if not threads or time.monotonic() > deadline:
                return
            threads[0].join(max(0.0, deadline - time.monotonic()))

    # --- does it fit ---------------------------------------------------------------------------

    def check_fits(self, path: Path, config: dict) -> None:
        """Refuse, before touching the model, an adapter trained for another base or shape,
        or one the engine cannot put in a mixed batch (DoRA: peft refuses ``adapter_names``
        with it, so one request to it would fail every request of its batch)."""
        if config.get("use_dora"):
            raise AdapterMismatch(
                f"Adapter {str(path)!r} is a DoRA adapter (use_dora: true in adapter_config.json); this "
                "server batches requests to the base and many adapters together, which DoRA does not support.",
                fix="Retrain it without DoRA (use_dora off), or merge it into the base (peft's "
                "merge_and_unload) and serve the merged model as a base.")
        problems = []
        trained_on = config.get("base_model_name_or_path")
        if trained_on and not _names_match(trained_on, self.base_name, self.base_path):
            problems.append(f"it was trained for base {trained_on!r}, this server runs {self.base_name!r}")
        try:
            problems += self._shape_problems(path)
        except Exception as exc:  # safetensors' own error: garbage bytes, a header longer than the file
            raise AdapterMismatch(
                f"Adapter {str(path)!r} has an adapter_model.safetensors that is not a readable safetensors "
                f"file ({error_text(exc)}).",
                fix="Re-export the adapter with peft's save_pretrained (safe_serialization).") from exc
        if problems:
            raise AdapterMismatch(
                f"Adapter {str(path)!r} does not fit base {self.base_name!r}: " + "; ".join(problems) + ".",
                fix="Load an adapter trained for this base, or start the server with the base it was "
                "trained for (tunelab serve --base ...).")

    def _shape_problems(self, path: Path) -> list[str]:
        weights = path / "adapter_model.safetensors"
        if not weights.is_file():
            return []
        problems, missing = [], []
        with safe_open(str(weights), framework="pt") as fh:
            for key in fh.keys():
                match = re.match(r"^(?:base_model\.model\.)?(.*)\.lora_([AB])(?:\.[^.]+)?\.weight$", key)
                if not match:
                    continue
                module, kind = match.groups()
                shape = self._shapes.get(module)
                if shape is None:
                    if module not in missing:
                        missing.append(module)
                    continue
                in_f, out_f = shape
                got = fh.get_slice(key).get_shape()
                if kind == "A" and got[-1] != in_f:
                    problems.append(f"{key} expects {got[-1]} inputs, the base module has {in_f}")
                if kind == "B" and got[0] != out_f:
                    problems.append(f"{key} has {got[0]} outputs, the base module has {out_f}")
        if missing:
            problems.insert(0, f"{len(missing)} of its modules are not in the base (e.g. {missing[0]})")
        if len(problems) > 3:
            problems = problems[:3] + [f"and {len(problems) - 3} more shape mismatches"]
        return problems


def _trained_system_prompt(path: Path) -> str | None:
    """The system prompt recorded in the adapter's ``tunelab.json`` (None without one, or
    for a folder that has no ``tunelab.json``); an unreadable file refuses the adapter, since
    serving it without its system prompt would ask it differently than it was trained."""
    try:
        meta = AdapterMeta.of(path)
        train = meta.hyperparameters.get("train")
        if train is not None and not isinstance(train, dict):
            raise ValueError(f"hyperparameters.train is {train!r}, not an object")
        prompt = meta.system_prompt
        if prompt is not None and not isinstance(prompt, str):
            raise ValueError(f"train.system_prompt is {prompt!r}, not a string")
        return prompt
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError and pydantic's are
        # ValueErrors; RecursionError: JSON nested too deeply
        raise AdapterMismatch(
            f"Adapter {str(path)!r} has a tunelab.json that cannot be read ({error_text(exc)}), so the "
            "system prompt it was trained behind is unknown.",
            fix="Repair tunelab.json, or remove it to serve the adapter with no trained system prompt.") from exc


def _names_match(trained_on: str, base_name: str, base_path: str) -> bool:
    """Loose comparison of an adapter's recorded base with the served one."""
    trained = base_key(trained_on)
    if not trained:
        return True
    for candidate in {base_key(base_name), base_key(base_path)} - {""}:
        if trained in candidate or candidate in trained:
            return True
    if base_path and Path(trained_on).expanduser().exists():
        try:
            return Path(trained_on).resolve() == Path(base_path).resolve()
        except OSError:
            return False
    return False


def _first_linear_name(model) -> str:
    output = model.get_output_embeddings()
    for name, module in model.named_modules():
        if module is output:
            continue
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
            return name
    raise AdapterMismatch("The base has no linear layer LoRA could attach to.")
