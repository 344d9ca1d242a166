"""The serving engine: one base model, any number of LoRA adapters, mixed-adapter batches.

The engine knows nothing of HTTP or the database. It holds a base model wrapped in a
``PeftModel`` and serves every request with its own adapter (or the base) in the same
batch, through peft's ``adapter_names=`` (never a global ``set_adapter``, which would
race between requests).

One scheduler thread owns the model's forward passes. It runs a continuous batch:
requests that arrive together are prefilled together (left padding), newcomers are
prefilled and merged into the running batch between decode steps, finished rows
leave the batch. Every step yields one token per row, so every row streams.

Hot swap without failed requests: each adapter is loaded under its own internal peft
name; a request binds to that internal name when it is submitted. ``load_inplace``
loads the new weights under another internal name, then switches the public name to
it; the old weights are released only once no in-flight request uses them. Structural
changes to the model happen under the same lock as the forward passes, between steps.

Fast swaps: an adapter whose shape was seen before is copied into a free preallocated
slot (:mod:`backend.serving.slots`) instead of being injected by peft; released slots go
back to the pool, and spare slots of a shape are prepared in the background after its
first load. Anything else takes peft's ``load_adapter`` path.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import os
import logging
import queue
import re
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Iterator

from backend.adapter_folder import read_peft_config
from backend.errors import AdapterMismatch, AdapterNotFound, Overloaded, PromptTooLong, TuneLabError
from backend.serving.slots import Slot, SlotPool, batchable, file_signature, fill, read_weights, slot_from_adapter
from backend.hardware.device import serving_dtype
from backend.hardware.prepack import prepack_linears
from backend.hardware.threads import own_intraop_threads

log = logging.getLogger("tunelab.engine")

BASE_ROW = "__base__"  # peft's name for "no adapter" in adapter_names
_NO_LORA = ("none",)  # a layer entry: no adapter of the batch targets this layer
_IDLE_ADAPTER = "tunelab_idle"  # a zero, one-module adapter so the PeftModel exists with none loaded


# --- requests and events ---------------------------------------------------------------------


@dataclass
class SamplingParams:
    """How to pick tokens. ``temperature`` 0 means greedy."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False  # keep going past end-of-sequence (benchmarks; vLLM has the same knob)


@dataclass
class TokenEvent:
    """One step of one request: the token picked and the text it adds.

    ``text`` is the new visible text (it may be empty while a stop string or a
    multi-byte character is still incomplete). The last event carries
    ``finish_reason`` ('stop', 'length', 'cancelled' or 'error') and ``generated_text``.
    """

    token_id: int | None
    token_text: str
    logprob: float | None
    special: bool
    text: str
    finish_reason: str | None = None
    generated_text: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    adapter: str | None
    batch_rows_max: int


class RequestHandle:
    """A submitted request: iterate (sync or async) over its :class:`TokenEvent`s."""

    def __init__(self, engine: "Engine", request: "_Request"):
        self._engine = engine
        self._request = request

    @property
    def id(self) -> int:
        return self._request.id

    @property
    def prompt_tokens(self) -> int:
        return len(self._request.prompt_ids)

    @property
    def batch_rows_max(self) -> int:
        """Most rows that shared a forward pass with this request (1 = served alone)."""
        return self._request.batch_rows_max

    def cancel(self) -> None:
        self._request.cancelled = True
        self._engine._wake()

    def __iter__(self) -> Iterator[TokenEvent]:
        sink = self._request.sync_queue
        if sink is None:
            raise TypeError("This request was submitted for async iteration; use `async for`.")
        while True:
            event = sink.get()
            yield event
            if event.finish_reason is not None:
                return

    async def __aiter__(self):
        sink = self._request.async_queue
        if sink is None:
            raise TypeError("This request was submitted for sync iteration; use `for`.")
        try:
            while True:
                event = await sink.get()
                yield event
                if event.finish_reason is not None:
                    return
        finally:
            if not self._request.done:
                self.cancel()

    def result(self) -> Completion:
        """Block until finished; raise :class:`TuneLabError` if the request failed."""
        ids: list[int] = []
        last = None
        for event in self:
            if event.token_id is not None and not event.special:
                ids.append(event.token_id)
            last = event
        return self._completion(ids, last)

    async def aresult(self) -> Completion:
        ids: list[int] = []
        last = None
        async for event in self:
            if event.token_id is not None and not event.special:
                ids.append(event.token_id)
            last = event
        return self._completion(ids, last)

    def _completion(self, ids, last: TokenEvent) -> Completion:
        if last.finish_reason == "error":
            raise TuneLabError(f"Generation failed: {last.error}")
        return Completion(text=last.generated_text or "", token_ids=ids, finish_reason=last.finish_reason,
                          prompt_tokens=last.prompt_tokens, completion_tokens=last.completion_tokens,
                          adapter=self._request.public_adapter, batch_rows_max=self._request.batch_rows_max)


@dataclass
class _Request:
    id: int
    prompt_ids: list[int]
    internal_adapter: str  # peft name, or BASE_ROW
    public_adapter: str | None
    params: SamplingParams
    sync_queue: "queue.Queue | None" = None
    async_queue: "asyncio.Queue | None" = None
    loop: "asyncio.AbstractEventLoop | None" = None
    submitted_at: float = field(default_factory=time.monotonic)
    generator: Any = None
    generated: list[int] = field(default_factory=list)
    sent_chars: int = 0
    cancelled: bool = False
    done: bool = False
    batch_rows_max: int = 0

    def emit(self, event: TokenEvent) -> None:
        if event.finish_reason is not None:
            self.done = True
        if self.sync_queue is not None:
            self.sync_queue.put(event)
        elif self.loop is not None and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self.async_queue.put_nowait, event)
            except RuntimeError:  # the loop closed in between: nobody is listening any more
                pass


@dataclass
class AdapterInfo:
    name: str
    path: str
    internal: str
    config: dict
    loaded_at: float
    slot: bool = False  # copied into a preallocated slot (fast path) rather than injected by peft


# --- the engine -------------------------------------------------------------------------------


class Engine:
    """Base model + LoRA adapters in memory, served in mixed continuous batches."""

    def __init__(self, model, tokenizer, *, base_name: str, base_path: str = "",
                 max_batch: int = 16, max_queue: int = 64, batch_window_s: float = 0.01,
                 context_limit: int | None = None, threads: int | None = None,
                 spare_slots: int = 2, max_free_slots: int = 4, prepack: bool = True):
        import torch
        from peft import LoraConfig, get_peft_model

        from backend.bases.load import context_length, decoder_of, scales_logits

        self.base_name = base_name
        self.base_path = base_path
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.batch_window_s = batch_window_s
        self.context_limit = context_limit or context_length(model.config)
        # torch's CPU thread pool spins at every op; when it has more threads than free
        # cores (training jobs, the UI, other processes) mixed-batch steps of thousands of
        # small LoRA ops slow down 5-10x. Serving takes half the cores by default.
        self.threads = threads if threads is not None else max(1, (os.cpu_count() or 2) // 2)
        self._torch = torch
        model.eval()
        self._module_shapes = _linear_shapes(model)  # before peft wraps any module
        # bf16 Linears packed once for oneDNN (same numbers, no reorder per call); before peft wraps them
        self.prepacked = prepack_linears(model) if prepack else 0
        idle = LoraConfig(r=1, lora_alpha=1, target_modules=[_first_linear_name(model)],
                          init_lora_weights=True, inference_mode=True)
        self.model = get_peft_model(model, idle, adapter_name=_IDLE_ADAPTER)
        self.model.eval()
        self._routing = _AdapterRouting(self.model)
        self._eos_ids = _eos_ids(model, tokenizer)
        self._special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
        self._can_join = _plain_dynamic_cache(model.config)  # newcomers may join a running batch
        self._accepts_logits_to_keep = _accepts(self.model.get_base_model(), "logits_to_keep")
        # None: the model scales or caps its logits, so the whole model runs
        self._decoder = None if scales_logits(model.config) else decoder_of(self.model)

        self._model_lock = threading.RLock()  # forward passes and adapter (un)loads
        self._cond = threading.Condition()  # guards the pending queue and the adapter table
        self._pending: deque[_Request] = deque()
        self._changes: deque = deque()  # adapter (un)loads for the scheduler to apply between steps
        self._adapters: dict[str, AdapterInfo] = {}
        self._refcount: dict[str, int] = {}
        self._retired: set[str] = set()
        self._peft_routed: set[str] = set()  # adapters that need peft's mixed-batch path
        self._slots = SlotPool(spare=spare_slots, max_free=max(max_free_slots, spare_slots))
        self._spare_threads: list[threading.Thread] = []
        self._ids = itertools.count(1)
        self._internal_ids = itertools.count(1)
        self._active: list[_Request] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.stats = EngineStats()

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def from_base(cls, spec: str | None, settings, **kwargs) -> "Engine":
        """Load the base named by ``spec`` (as in :func:`backend.bases.resolve_base`)."""
        from backend.bases.resolve import resolve_base
        from backend.bases.load import load_model, load_tokenizer

        ref = resolve_base(spec, settings)
        tokenizer = load_tokenizer(ref, plain_template=True, trust_remote_code=settings.trust_remote_code)
        tokenizer.padding_side = "left"
        dtype = serving_dtype(getattr(settings, "serve_dtype", "auto"))
        model = load_model(ref, dtype=dtype, trust_remote_code=settings.trust_remote_code)
        kwargs.setdefault("prepack", getattr(settings, "serve_prepack", True))
        return cls(model, tokenizer, base_name=ref.name, base_path=ref.path, **kwargs)

    def start(self) -> "Engine":
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="tunelab-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # --- adapters -------------------------------------------------------------------------

    def adapters(self) -> dict[str, AdapterInfo]:
        with self._cond:
            return dict(self._adapters)

    def known_models(self) -> list[str]:
        return [self.base_name, *sorted(self.adapters())]

    def load_adapter(self, name: str, path: str | Path, *, inplace: bool = False) -> AdapterInfo:
        """Load the PEFT LoRA folder ``path`` as ``name``; refuse what does not fit this base.

        With ``inplace`` an adapter already loaded as ``name`` is replaced atomically:
        requests already submitted finish on the old weights, new ones get the new.
        """
        path = Path(path).expanduser().resolve()
        with self._cond:
            if name in self._adapters and not inplace:
                raise AdapterMismatch(
                    f"An adapter named {name!r} is already loaded (from {self._adapters[name].path}).",
                    fix="Pass load_inplace=true to replace it, or unload it first.")
            if name == self.base_name:
                raise AdapterMismatch(f"{name!r} is the base model's name; pick another adapter name.")
        config = read_peft_config(path)
        self._check_fits(path, config)
        started = time.perf_counter()
        signature = file_signature(path, config)
        internal = self._load_into_slot(path, config, signature) if signature is not None else None
        in_slot = internal is not None
        if internal is None:
            internal = self._load_with_peft(path, name, config, signature)
        info = AdapterInfo(name=name, path=str(path), internal=internal, config=config, loaded_at=time.time(),
                           slot=in_slot)
        with self._cond:
            old = self._adapters.get(name)
            self._adapters[name] = info
            if old is not None:
                self._retired.add(old.internal)
        self.stats.loads += 1
        log.info("loaded adapter %s from %s in %.3fs (%s)", name, path, time.perf_counter() - started,
                 "slot" if in_slot else "peft")
        self._collect_retired()
        if signature is not None:
            self._prepare_spares(signature)
        return info

    def _load_into_slot(self, path: Path, config: dict, signature: tuple) -> str | None:
        """Copy the adapter into a free slot of its signature; None when there is none.

        Runs in the caller's thread, not the scheduler's: the free slot is named by no
        request, so no forward pass reads the tensors being overwritten.
        """
        with self._cond:
            slot = self._slots.take(signature)
        if slot is None:
            return None
        try:
            fill(slot, read_weights(path), config)
            self._routing.invalidate()
        except Exception as exc:  # unreadable file or a config that contradicts its tensors
            self._release_slot(slot)
            raise AdapterMismatch(
                f"Adapter {str(path)!r} does not fit base {self.base_name!r}: {_short(exc)}",
                fix="Load an adapter trained for this base.") from exc
        self.stats.slot_loads += 1
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
                    f"Adapter {str(path)!r} does not fit base {self.base_name!r}: {_short(exc)}",
                    fix="Load an adapter trained for this base.") from exc
            if not batchable(self.model, internal, config):
                self._peft_routed.add(internal)
            slot = slot_from_adapter(self.model, internal, signature) if signature is not None else None
            if slot is not None:
                with self._cond:
                    self._slots.add(slot, free=False)

        self._between_steps(inject)
        return internal

    def _prepare_spares(self, signature: tuple) -> None:
        """Top up the free slots of ``signature`` in a background thread, off the request path."""
        with self._cond:
            missing = self._slots.missing_spares(signature)
            if missing == 0 or signature in self._slots.filling:
                return
            template = next((s.name for s in self._slots.slots.values() if s.signature == signature), None)
            if template is None:
                return
            self._slots.filling.add(signature)
            self._spare_threads = [t for t in self._spare_threads if t.is_alive()]
            thread = threading.Thread(target=self._make_spares, args=(signature, template, missing),
                                      name="tunelab-spare-slots", daemon=True)
            self._spare_threads.append(thread)
        thread.start()

    def _make_spares(self, signature: tuple, template: str, count: int) -> None:
        try:
            for _ in range(count):
                if self._stopping:
                    return
                name = f"slot{next(self._internal_ids)}"

                def create(name=name) -> Slot | None:
                    config = copy.deepcopy(self.model.peft_config[template])
                    config.inference_mode = True
                    self.model.add_adapter(name, config)
                    self.model.eval()
                    self._routing.rebuild(self.model)
                    self.model.base_model._active_adapter = [_IDLE_ADAPTER]
                    slot = slot_from_adapter(self.model, name, signature)
                    if slot is None:
                        self._drop_internal(name)
                    return slot

                slot = self._between_steps(create)
                if slot is None:
                    log.warning("spare slots for adapter %s's shape are not possible", template)
                    return
                with self._cond:
                    self._slots.add(slot, free=True)
        except Exception:  # the template went away, or peft refused: swaps take peft's path
            log.exception("could not prepare a spare slot like %s", template)
        finally:
            with self._cond:
                self._slots.filling.discard(signature)

    def preparing_spares(self) -> bool:
        """True while a background thread prepares spare slots."""
        with self._cond:
            return any(t.is_alive() for t in self._spare_threads)

    def describe(self) -> dict:
        """How this engine serves (``/info`` reports it; benchmarks record it)."""
        return {"dtype": str(self.model.get_base_model().dtype).replace("torch.", ""), "threads": self.threads,
                "max_batch": self.max_batch, "batch_window_s": self.batch_window_s,
                "prepacked_linears": self.prepacked, "spare_slots": self._slots.spare}

    def wait_for_spares(self, timeout: float = 60.0) -> None:
        """Block until background slot preparation is done (benchmarks and tests)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                threads = [t for t in self._spare_threads if t.is_alive()]
            if not threads or time.monotonic() > deadline:
                return
            threads[0].join(max(0.0, deadline - time.monotonic()))

    def _release_slot(self, slot: Slot) -> None:
        with self._cond:
            kept = self._slots.give_back(slot)
        if not kept:
            self._between_steps(lambda: self._drop_internal(slot.name))

    def unload_adapter(self, name: str) -> AdapterInfo:
        """Forget ``name``; its weights go once the requests using them have finished."""
        with self._cond:
            info = self._adapters.pop(name, None)
            if info is None:
                raise AdapterNotFound(name, list(self._adapters))
            self._retired.add(info.internal)
        self._collect_retired()
        return info

    def _check_fits(self, path: Path, config: dict) -> None:
        """Refuse, before touching the model, an adapter trained for another base or shape."""
        problems = []
        trained_on = config.get("base_model_name_or_path")
        if trained_on and not _names_match(trained_on, self.base_name, self.base_path):
            problems.append(f"it was trained for base {trained_on!r}, this server runs {self.base_name!r}")
        problems += self._shape_problems(path)
        if problems:
            raise AdapterMismatch(
                f"Adapter {str(path)!r} does not fit base {self.base_name!r}: " + "; ".join(problems) + ".",
                fix="Load an adapter trained for this base, or start the server with the base it was "
                "trained for (tunelab serve --base ...).")

    def _shape_problems(self, path: Path) -> list[str]:
        weights = path / "adapter_model.safetensors"
        if not weights.is_file():
            return []
        from safetensors import safe_open

        problems, missing = [], []
        with safe_open(str(weights), framework="pt") as fh:
            for key in fh.keys():
                match = re.match(r"^(?:base_model\.model\.)?(.*)\.lora_([AB])(?:\.[^.]+)?\.weight$", key)
                if not match:
                    continue
                module, kind = match.groups()
                shape = self._module_shapes.get(module)
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

    def _collect_retired(self) -> None:
        """Delete retired adapter weights that no request uses any more."""
        with self._cond:
            ready = [n for n in self._retired if self._refcount.get(n, 0) == 0]
            self._retired.difference_update(ready)
        for internal in ready:
            with self._cond:
                slot = self._slots.slots.get(internal)
            if slot is not None:
                self._release_slot(slot)  # back to the pool: no module changes, no waiting
            else:
                self._between_steps(lambda internal=internal: self._drop_internal(internal))

    def _between_steps(self, change: Callable[[], Any]) -> Any:
        """Run a change to the model's modules in the scheduler thread, between two steps.

        Handing the change to the scheduler (instead of racing it for a lock) makes a
        swap wait for at most one decode step, however busy the server is.
        """
        if not self.alive() or threading.current_thread() is self._thread:
            with self._model_lock:
                return change()
        future: Future = Future()
        with self._cond:
            self._changes.append((change, future))
            self._cond.notify_all()
        while True:
            try:
                return future.result(timeout=0.5)
            except FutureTimeout:
                if not self.alive() and not future.done():
                    with self._cond:
                        if (change, future) in self._changes:
                            self._changes.remove((change, future))
                    with self._model_lock:
                        return change()

    def _apply_changes(self) -> None:
        while True:
            with self._cond:
                if not self._changes:
                    return
                change, future = self._changes.popleft()
            try:
                with self._model_lock:
                    future.set_result(change())
            except BaseException as exc:  # handed to the caller waiting on the future
                future.set_exception(exc)

    def _drop_internal(self, internal: str) -> None:
        with self._cond:
            self._slots.slots.pop(internal, None)
        self._peft_routed.discard(internal)
        self._routing.invalidate()
        if internal in self.model.peft_config:
            try:
                self.model.delete_adapter(internal)
            except Exception:  # a half-loaded adapter: nothing more to free
                log.exception("could not delete adapter %s", internal)
                self.model.peft_config.pop(internal, None)
            # deleting the active adapter makes peft pick another; keep the idle one active
            self.model.base_model._active_adapter = [_IDLE_ADAPTER]

    # --- submitting -----------------------------------------------------------------------

    def encode_chat(self, messages: list[dict]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def resolve_model(self, model: str | None) -> str | None:
        """None for the base; the adapter name otherwise; :class:`AdapterNotFound` if unknown."""
        if model in (None, "", self.base_name, BASE_ROW):
            return None
        with self._cond:
            if model in self._adapters:
                return model
            known = [self.base_name, *self._adapters]
        raise AdapterNotFound(model, known)

    def submit(self, prompt_ids: list[int], adapter: str | None = None, params: SamplingParams | None = None,
               *, asynchronous: bool = False) -> RequestHandle:
        """Queue a request; with ``asynchronous`` iterate it with ``async for`` in this loop."""
        import torch

        params = params or SamplingParams()
        prompt_ids = list(prompt_ids)
        if not prompt_ids:
            raise PromptTooLong("The prompt is empty.", fix="Send at least one token of prompt.")
        if len(prompt_ids) >= self.context_limit:
            raise PromptTooLong(
                f"The prompt has {len(prompt_ids)} tokens; base {self.base_name!r} has a context of "
                f"{self.context_limit} tokens, which must also hold the answer.",
                fix="Shorten the prompt or the conversation history.")
        params.max_tokens = max(1, min(int(params.max_tokens), self.context_limit - len(prompt_ids)))
        loop = asyncio.get_running_loop() if asynchronous else None
        with self._cond:
            if len(self._pending) >= self.max_queue:
                self.stats.rejected += 1
                raise Overloaded(
                    f"The server has {len(self._pending)} requests waiting (limit {self.max_queue}).",
                    retry_after=1.0, fix="Retry after a second.")
            if adapter is None:
                internal = BASE_ROW
            elif adapter in self._adapters:
                internal = self._adapters[adapter].internal
            else:
                raise AdapterNotFound(adapter, [self.base_name, *self._adapters])
            request = _Request(
                id=next(self._ids), prompt_ids=prompt_ids, internal_adapter=internal, public_adapter=adapter,
                params=params,
                sync_queue=None if asynchronous else queue.Queue(),
                async_queue=asyncio.Queue() if asynchronous else None, loop=loop)
            if params.temperature and params.temperature > 0:
                request.generator = torch.Generator()
                request.generator.manual_seed(params.seed if params.seed is not None
                                              else int(time.time_ns() % (2**63)))
            self._refcount[internal] = self._refcount.get(internal, 0) + 1
            self._pending.append(request)
            self.stats.requests += 1
            self._cond.notify_all()
        self.start()
        return RequestHandle(self, request)

    def generate(self, prompt_ids: list[int], adapter: str | None = None, **params) -> Completion:
        return self.submit(prompt_ids, adapter, SamplingParams(**params)).result()

    def alive(self) -> bool:
        """True while the scheduler thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def queue_depth(self) -> int:
        with self._cond:
            return len(self._pending)

    def running(self) -> int:
        return len(self._active)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # --- the scheduler --------------------------------------------------------------------

    def _run(self) -> None:
        torch = self._torch
        if self.threads:
            own_intraop_threads(self.threads)  # this thread only; others default to 1 (see torch_threads)
        batch: _Batch | None = None
        with torch.inference_mode():
            while not self._stopping:
                self._apply_changes()
                with self._cond:
                    if not self._pending and batch is None:
                        if not self._changes:
                            self._cond.wait(timeout=0.5)
                        continue
                if batch is None and self.batch_window_s > 0:
                    time.sleep(self.batch_window_s)  # let requests that arrive together ride together
                room = self.max_batch - (batch.size if batch else 0)
                if batch is not None and not self._can_join:
                    room = 0
                newcomers = self._take_pending(room)
                try:
                    with self._model_lock:
                        if newcomers:
                            fresh = self._prefill(newcomers)
                            # the running rows' pending tokens were emitted by the step that chose
                            # them: only the newcomers' first tokens are new here
                            first_new = 0 if batch is None else batch.size
                            batch = fresh if batch is None else self._merge(batch, fresh)
                            self._emit_and_prune(batch, first_row=first_new)
                        elif batch is not None:
                            self._step(batch)
                            self._emit_and_prune(batch)
                except Exception as exc:  # keep serving: fail this batch, not the server
                    log.exception("generation step failed")
                    failed = (batch.requests if batch else []) + [r for r in newcomers if not r.done
                                                                  and (batch is None or r not in batch.requests)]
                    for request in failed:
                        self._finish(request, "error", error=_short(exc))
                    batch = None
                if batch is not None and batch.size == 0:
                    batch = None
                self._active = batch.requests if batch else []
                self._collect_retired()
            # shutting down: apply pending changes, fail what is left so no caller waits for ever
            self._apply_changes()
            for request in (batch.requests if batch else []) + list(self._pending):
                self._finish(request, "cancelled", error="the server is shutting down")

    def _take_pending(self, room: int) -> list[_Request]:
        taken = []
        with self._cond:
            while self._pending and len(taken) < room:
                request = self._pending.popleft()
                if request.cancelled:
                    self._finish(request, "cancelled")
                    continue
                taken.append(request)
        return taken

    def _prefill(self, requests: list[_Request]) -> "_Batch":
        torch = self._torch
        width = max(len(r.prompt_ids) for r in requests)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.tensor([[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in requests])
        mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in requests])
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.get_base_model().config)
        logits = self._forward(input_ids, mask, cache, [r.internal_adapter for r in requests], prefill=True)
        batch = _Batch(requests=list(requests), mask=mask, cache=cache, next_ids=None)
        self.stats.prefills.append(len(requests))
        self._choose(batch, logits)
        return batch

    def _step(self, batch: "_Batch") -> None:
        torch = self._torch
        batch.mask = torch.cat([batch.mask, torch.ones(batch.size, 1, dtype=batch.mask.dtype)], dim=1)
        logits = self._forward(batch.next_ids[:, None], batch.mask, batch.cache,
                               [r.internal_adapter for r in batch.requests], prefill=False)
        self._choose(batch, logits)

    def _forward(self, input_ids, mask, cache, adapter_names, *, prefill: bool):
        torch = self._torch
        position_ids = mask.long().cumsum(-1) - 1
        position_ids.masked_fill_(mask == 0, 1)
        position_ids = position_ids[:, -input_ids.shape[1]:]
        kwargs = dict(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                      past_key_values=cache, use_cache=True, adapter_names=adapter_names)
        if self._accepts_logits_to_keep:
            kwargs["logits_to_keep"] = 1
        rows = input_ids.shape[0]
        self.stats.steps += 1
        self.stats.max_rows = max(self.stats.max_rows, rows)
        self.stats.step_rows.append(rows)
        names = kwargs.pop("adapter_names")
        with self._routing.rows(names, batched=not self._peft_routed.intersection(names)):
            head = self.model.get_base_model().get_output_embeddings()
            if self._decoder is not None and type(head) is torch.nn.Linear:  # not wrapped by an adapter
                # the head on a 2-D (rows x hidden) input: on a (rows x 1 x hidden) one,
                # bf16 matmul on CPU copies the whole vocabulary x hidden head every call
                kwargs.pop("logits_to_keep", None)
                hidden = self._decoder(**kwargs).last_hidden_state[:, -1, :]
                return head(hidden).float()
            out = self.model.get_base_model()(**kwargs)
        return out.logits[:, -1, :].float()

    def _choose(self, batch: "_Batch", logits) -> None:
        torch = self._torch
        logprobs = torch.log_softmax(logits, dim=-1)
        chosen = torch.argmax(logits, dim=-1)
        for row, request in enumerate(batch.requests):
            request.batch_rows_max = max(request.batch_rows_max, batch.size)
            temperature = request.params.temperature or 0.0
            if temperature > 0:
                chosen[row] = _sample(logits[row], temperature, request.params.top_p, request.generator)
        batch.next_ids = chosen
        batch.logprobs = logprobs.gather(1, chosen[:, None])[:, 0]

    def _merge(self, old: "_Batch", new: "_Batch") -> "_Batch":
        """One batch from two: left-pad the shorter's cache and mask, stack the rows."""
        torch = self._torch
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        layers_old, layers_new = old.cache.layers, new.cache.layers
        if not all(type(layer) is DynamicLayer for layer in (*layers_old, *layers_new)):
            raise TuneLabError("This base's cache type cannot join running batches.")
        width = max(old.mask.shape[1], new.mask.shape[1])

        def left_pad(t, dim_len):
            extra = width - dim_len
            if extra == 0:
                return t
            shape = list(t.shape)
            shape[-2 if t.dim() == 4 else 1] = extra
            zeros = torch.zeros(shape, dtype=t.dtype)
            return torch.cat([zeros, t], dim=-2 if t.dim() == 4 else 1)

        data = []
        for lo, ln in zip(layers_old, layers_new):
            keys = torch.cat([left_pad(lo.keys, old.mask.shape[1]), left_pad(ln.keys, new.mask.shape[1])])
            values = torch.cat([left_pad(lo.values, old.mask.shape[1]), left_pad(ln.values, new.mask.shape[1])])
            data.append((keys, values))
        merged = _Batch(
            requests=old.requests + new.requests,
            mask=torch.cat([left_pad(old.mask, old.mask.shape[1]), left_pad(new.mask, new.mask.shape[1])]),
            cache=DynamicCache(ddp_cache_data=data),
            next_ids=torch.cat([old.next_ids, new.next_ids]),
        )
        merged.logprobs = torch.cat([old.logprobs, new.logprobs])
        return merged

    def _emit_and_prune(self, batch: "_Batch", first_row: int = 0) -> None:
        """Emit the chosen token of rows ``first_row`` on; drop the rows that finished."""
        keep = list(range(first_row))
        for row, request in enumerate(batch.requests[first_row:], start=first_row):
            if request.cancelled:
                self._finish(request, "cancelled")
                continue
            if not self._advance(request, int(batch.next_ids[row]), float(batch.logprobs[row])):
                keep.append(row)
        if len(keep) < batch.size:
            batch.select(keep, self._torch)

    def _advance(self, request: _Request, token: int, logprob: float) -> bool:
        """Record one token for ``request`` and emit its event; True when the request is done."""
        params = request.params
        special = token in self._eos_ids or token in self._special_ids
        token_text = self.tokenizer.decode([token], skip_special_tokens=False)
        self.stats.tokens += 1
        if token in self._eos_ids and not params.ignore_eos:
            self._finish(request, "stop", token=token, token_text=token_text, logprob=logprob, special=True)
            return True
        request.generated.append(token)
        text = self.tokenizer.decode(request.generated, skip_special_tokens=True)
        finish = None
        visible = len(text)
        if params.stop:
            hit = _find_stop(text, params.stop, max(0, request.sent_chars - max(map(len, params.stop))))
            if hit is not None:
                visible, finish = hit, "stop"
            else:
                visible = len(text) - _partial_stop(text, params.stop)
        if finish is None and len(request.generated) >= params.max_tokens:
            finish = "length"
        if finish is None and text.endswith("\ufffd"):
            visible = min(visible, len(text) - 1)  # half of a multi-byte character: wait for the rest
        if finish == "length":
            visible = len(text)  # no stop string was hit: release any text held back
        delta = text[request.sent_chars:visible] if visible > request.sent_chars else ""
        request.sent_chars = max(request.sent_chars, visible)
        if finish is not None:
            self._finish(request, finish, token=token, token_text=token_text, logprob=logprob, special=special,
                         delta=delta, final_text=text[:visible])
            return True
        request.emit(TokenEvent(token_id=token, token_text=token_text, logprob=logprob, special=special,
                                text=delta, prompt_tokens=len(request.prompt_ids),
                                completion_tokens=len(request.generated)))
        return False

    def _finish(self, request: _Request, reason: str, *, token=None, token_text="", logprob=None,
                special=False, delta="", final_text=None, error=None) -> None:
        if request.done:
            return
        if final_text is None:
            final_text = self.tokenizer.decode(request.generated, skip_special_tokens=True)
            if request.params.stop:
                hit = _find_stop(final_text, request.params.stop, 0)
                final_text = final_text[:hit] if hit is not None else final_text
            delta = final_text[request.sent_chars:]
        with self._cond:
            self._refcount[request.internal_adapter] -= 1
        self.stats.finished += 1
        self.stats.latencies.append(time.monotonic() - request.submitted_at)
        request.emit(TokenEvent(token_id=token, token_text=token_text, logprob=logprob, special=special,
                                text=delta, finish_reason=reason, generated_text=final_text,
                                prompt_tokens=len(request.prompt_ids), completion_tokens=len(request.generated),
                                error=error))


@dataclass
class _Batch:
    requests: list[_Request]
    mask: Any
    cache: Any
    next_ids: Any
    logprobs: Any = None

    @property
    def size(self) -> int:
        return len(self.requests)

    def select(self, rows: list[int], torch) -> None:
        """Keep ``rows``; drop columns that are padding for every remaining row."""
        index = torch.tensor(rows, dtype=torch.long)
        self.requests = [self.requests[i] for i in rows]
        if not rows:
            return
        self.mask = self.mask[index]
        self.next_ids = self.next_ids[index]
        self.logprobs = self.logprobs[index]
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if used.numel() else 0
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]


class _AdapterRouting:
    """Applies each row's adapter inside every LoRA layer of a mixed batch.

    Two ways, picked per forward pass:

    * Batched (plain LoRA adapters, the common case): peft's layers compute only the
      base, and a forward hook adds every row's LoRA term with two matmuls per layer,
      whatever the number of adapters in the batch: the adapters' ``lora_A`` stacked
      (r1+r2+... rows), a one-hot mask that keeps each row's own rank columns, the
      stacked ``lora_B``, then each row's scaling. peft's ``adapter_names`` path
      instead slices the batch and runs two small matmuls per adapter per layer,
      which made a 5-adapter decode step cost 2.5x a plain one. The stacks are kept
      while the batch's set of adapters stays the same.
    * peft's own mixed-batch path (``adapter_names=``) for adapters that compute more
      than weights x scaling (DoRA, LoRA bias, modules_to_save, embeddings, ...):
      ``PeftModel.forward(adapter_names=...)`` would register and remove a pre-forward
      hook on every LoRA layer at every call, so the same hook is kept registered here.

    Only the scheduler thread runs forward passes, so one "current rows" slot is enough.
    """

    def __init__(self, peft_model):
        self._names: list[str] | None = None  # peft path: the rows' adapter names
        self._plan: tuple | None = None  # batched path: (rows' names, adapters in order, per-pass cache)
        self._layers: dict = {}  # layer id -> what it adds for the current set of adapters (_layer_entry)
        self._layers_for: tuple | None = None
        self._handles: list = []
        import torch.nn.functional

        self._functional = torch.nn.functional  # bound once: _add_lora runs for every layer of every pass
        self.rebuild(peft_model)

    def rebuild(self, peft_model) -> None:
        from peft.tuners.lora import LoraLayer
        from peft.tuners.lora.layer import Linear as LoraLinear
        from peft.utils.other import AuxiliaryTrainingWrapper

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
            entry = self._layers[id(module)] = self._layer_entry(module, names, adapters)
        if entry is _NO_LORA:
            return None
        x = args[0]
        cast = per_pass.get("x")  # q/k/v (and gate/up) share their input: cast it once
        if cast is None or cast[0] is not x or cast[1].dtype != entry[1].dtype:
            cast = per_pass["x"] = (x, x.to(entry[1].dtype))
        x = cast[1]
        F = self._functional
        if entry[0] == "one":
            # one adapter for every row: peft's own single-adapter computation, summed in
            # the adapter's dtype and rounded once into the base's output (in place: same numbers)
            _, lora_a, lora_b, scaling = entry
            return output.add_(F.linear(F.linear(x, lora_a), lora_b) * scaling)
        _, a_stack, b_stack, layout = entry
        masks = per_pass.get(layout)
        if masks is None:
            masks = per_pass[layout] = self._row_masks(module, names, layout[0], a_stack)
        one_hot, scale = masks
        delta = F.linear(x, a_stack) * one_hot
        return output.add_(F.linear(delta, b_stack) * scale)

    @staticmethod
    def _layer_entry(module, names, adapters):
        """What layer ``module`` adds for a batch of ``adapters``, its weights stacked once per set."""
        import torch

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

    @staticmethod
    def _row_masks(module, names, present, a_stack):
        """Per row: a 0/1 mask over the stacked rank columns, and the row's adapter scaling."""
        import torch

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
        return one_hot, scale

    @contextmanager
    def rows(self, names: list[str], *, batched: bool):
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


@dataclass
class EngineStats:
    """Counters the server exports as metrics and tests read to see batching happen."""

    requests: int = 0
    finished: int = 0
    rejected: int = 0
    tokens: int = 0
    steps: int = 0
    loads: int = 0
    slot_loads: int = 0  # loads that copied into a preallocated slot (the fast path)
    max_rows: int = 0
    prefills: deque = field(default_factory=lambda: deque(maxlen=1024))
    step_rows: deque = field(default_factory=lambda: deque(maxlen=4096))
    latencies: deque = field(default_factory=lambda: deque(maxlen=1024))


# --- helpers ----------------------------------------------------------------------------------


def _sample(logits, temperature: float, top_p: float, generator):
    import torch

    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p is not None and 0 < top_p < 1:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        cut = cumulative - sorted_probs > top_p
        sorted_probs[cut] = 0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator)[0]


def _find_stop(text: str, stops: list[str], start: int) -> int | None:
    hits = [i for i in (text.find(s, start) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


def _partial_stop(text: str, stops: list[str]) -> int:
    """Length of the longest tail of ``text`` that could start a stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                best = max(best, n)
                break
    return best


def _names_match(trained_on: str, base_name: str, base_path: str) -> bool:
    """Loose comparison of an adapter's recorded base with the served one."""

    def norm(value: str) -> str:
        return re.sub(r"[^a-z0-9]", "", Path(str(value).rstrip("/")).name.lower())

    trained = norm(trained_on)
    if not trained:
        return True
    for candidate in {norm(base_name), norm(base_path)} - {""}:
        if trained in candidate or candidate in trained:
            return True
    if base_path and Path(trained_on).expanduser().exists():
        try:
            return Path(trained_on).resolve() == Path(base_path).resolve()
        except OSError:
            return False
    return False


def _plain_dynamic_cache(config) -> bool:
    """True when every cache layer is a full-attention DynamicLayer (rows can be merged)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        layers = DynamicCache(config=config).layers
    except Exception:
        return False
    return all(type(layer) is DynamicLayer for layer in layers)


def _first_linear_name(model) -> str:
    import torch

    output = model.get_output_embeddings()
    for name, module in model.named_modules():
        if module is output:
            continue
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
            return name
    raise AdapterMismatch("The base has no linear layer LoRA could attach to.")


def _linear_shapes(model) -> dict[str, tuple[int, int]]:
    """(in, out) features of every linear/embedding module, by name, for adapter shape checks."""
    import torch

    shapes = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            shapes[name] = (module.in_features, module.out_features)
        elif type(module).__name__ == "Conv1D":
            shapes[name] = tuple(module.weight.shape)  # Conv1D stores (in, out)
        elif isinstance(module, torch.nn.Embedding):
            shapes[name] = (module.num_embeddings, module.embedding_dim)
    return shapes


def _eos_ids(model, tokenizer) -> set[int]:
    ids = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _accepts(model, argument: str) -> bool:
    import inspect

    try:
        return argument in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _short(exc: BaseException, limit: int = 400) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + " ..."
