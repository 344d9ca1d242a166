"""The serving engine: one base model, any number of LoRA adapters, mixed-adapter batches.

The engine knows nothing of HTTP or the database. It holds a base model wrapped in a
``PeftModel`` and serves every request with its own adapter (or the base) in the same
batch (:mod:`backend.serving.routing`; never a global ``set_adapter``, which would race
between requests).

One scheduler thread owns the model's forward passes. It runs a continuous batch
(:mod:`backend.serving.batch`): requests that arrive together are prefilled together
(left padding), newcomers are prefilled and merged into the running batch between
decode steps, finished rows leave the batch. Every step yields one token per row, so
every row streams (:mod:`backend.serving.decode`).

Adapters come and go without failing a request (:mod:`backend.serving.registry`):
changes to the model's modules are handed to the scheduler and applied between two
steps (:meth:`Engine.run_between_steps`).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, Callable

import torch

from backend.bases.load import context_length, decoder_of, load_model, load_tokenizer, scales_logits
from backend.bases.resolve import resolve_base
from backend.data.normalized import behind_system
from backend.errors import Overloaded, PromptTooLong, TuneLabError
from backend.hardware.device import device_kind, serving_dtype
from backend.hardware.prepack import prepack_linears
from backend.hardware.threads import ServingFlag, own_intraop_threads, single_threaded_by_default
from backend.serving.batch import Batch, CachePlan, can_merge, merge, new_cache, position_ids, prefill_inputs
from backend.serving.decode import Detokenizer, choose, eos_ids
from backend.serving.kv_cache import PreallocatedCache, use_preallocated
from backend.serving.registry import AdapterInfo, AdapterRegistry, linear_shapes, wrap_for_adapters
from backend.serving.requests import Completion, Request, RequestHandle, SamplingParams, TokenEvent, error_text
from backend.serving.routing import AdapterRouting
from backend.serving.stats import EngineStats
from backend.settings import Settings

log = logging.getLogger("tunelab.engine")


class Engine:
    """Base model + LoRA adapters in memory, served in mixed continuous batches."""

    def __init__(self, model, tokenizer, *, base_name: str, base_path: str = "",
                 max_batch: int = 16, max_queue: int = 64, batch_window_s: float = 0.01,
                 context_limit: int | None = None, threads: int | None = None,
                 spare_slots: int = 2, max_free_slots: int = 4, prepack: bool = True, busy_flag: Path | None = None,
                 kv_cache: str = "auto"):
        self.base_name = base_name
        self.base_path = base_path
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.batch_window_s = batch_window_s
        self.context_limit = context_limit or context_length(model.config)
        # torch's CPU thread pool spins at every op; when it has more threads than free
        # cores (training jobs, the UI, other processes) mixed-batch steps of thousands of
        # small LoRA ops slow down several times. Serving takes half the cores by default.
        self.threads = threads if threads is not None else max(1, (os.cpu_count() or 2) // 2)
        model.eval()
        self.device = next(model.parameters()).device  # the inputs, masks and caches live there too
        shapes = linear_shapes(model)  # before peft wraps any module
        # bf16 Linears packed once for oneDNN (same numbers, no reorder per call) for decode steps
        # of up to max_batch rows; before peft wraps them
        self.prepacked = prepack_linears(model, max_rows=max_batch) if prepack else 0
        self.model = wrap_for_adapters(model)
        self.stats = EngineStats()
        self._routing = AdapterRouting(self.model)
        self.registry = AdapterRegistry(
            self.model, self._routing, shapes, base_name=base_name, base_path=base_path, stats=self.stats,
            between_steps=self.run_between_steps, stopping=lambda: self._stopping,
            spare_slots=spare_slots, max_free_slots=max_free_slots)
        self._detokenizer = Detokenizer(tokenizer, eos_ids(model, tokenizer))
        self._can_join = can_merge(model.config)  # newcomers may join a running batch
        # keys and values in blocks allocated ahead, written in place (backend.serving.kv_cache);
        # only where every layer is full attention, as merging requires
        self.cache_plan = CachePlan(preallocate=self._can_join and use_preallocated(kv_cache, self.device),
                                    max_rows=max_batch)
        self._accepts_logits_to_keep = _accepts(self.model.get_base_model(), "logits_to_keep")
        # None: the model scales or caps its logits, so the whole model runs
        self._decoder = None if scales_logits(model.config) else decoder_of(self.model)

        self._model_lock = threading.RLock()  # forward passes and changes to the model's modules
        self._cond = threading.Condition()  # guards the pending queue and the changes to apply
        self._pending: deque[Request] = deque()
        self._changes: deque = deque()  # model changes for the scheduler to apply between steps
        self._ids = itertools.count(1)
        self._active: list[Request] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        # up while requests wait or generate: a CPU training run on this machine waits meanwhile
        self._serving_flag = ServingFlag(busy_flag)

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def from_base(cls, spec: str | None, settings: Settings, **kwargs) -> "Engine":
        """Load the base named by ``spec`` (as in :func:`backend.bases.resolve.resolve_base`) to serve it.

        From here on the calling thread, and every thread that starts torch work after it,
        uses one intra-op thread: the scheduler thread alone takes ``threads``
        (:mod:`backend.hardware.threads`), so the thread that loads the model never
        builds a thread pool of its own.
        """
        single_threaded_by_default()
        ref = resolve_base(spec, settings)
        tokenizer = load_tokenizer(ref, plain_template=True, trust_remote_code=settings.trust_remote_code)
        tokenizer.padding_side = "left"
        model = load_model(ref, dtype=serving_dtype(settings.serve_dtype), device=device_kind(),
                           trust_remote_code=settings.trust_remote_code)
        kwargs.setdefault("prepack", settings.serve_prepack)
        kwargs.setdefault("kv_cache", settings.serve_kv_cache)
        kwargs.setdefault("busy_flag", settings.paths.serving_busy)
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

    def describe(self) -> dict:
        """How this engine serves (``/info`` reports it; benchmarks record it)."""
        return {"dtype": str(self.model.get_base_model().dtype).replace("torch.", ""), "threads": self.threads,
                "max_batch": self.max_batch, "batch_window_s": self.batch_window_s,
                "prepacked_linears": self.prepacked, "spare_slots": self.registry.slots.spare,
                "kv_cache": "preallocated" if self.cache_plan.preallocate else "dynamic"}

    # --- adapters (see backend.serving.registry) ------------------------------------------

    def adapters(self) -> dict[str, AdapterInfo]:
        return self.registry.adapters()

    def load_adapter(self, name: str, path: str | Path, *, inplace: bool = False) -> AdapterInfo:
        """Load the PEFT LoRA folder ``path`` as ``name`` (``inplace``: replace it atomically)."""
        return self.registry.load(name, path, inplace=inplace)

    def unload_adapter(self, name: str) -> AdapterInfo:
        """Forget ``name``; its weights go once the requests using them have finished."""
        return self.registry.unload(name)

    def resolve_model(self, model: str | None) -> str | None:
        """None for the base; the adapter name otherwise; :class:`AdapterNotFound` if unknown."""
        return self.registry.resolve(model)

    def preparing_spares(self) -> bool:
        return self.registry.preparing_spares()

    def wait_for_spares(self, timeout: float = 60.0) -> None:
        self.registry.wait_for_spares(timeout)

    def run_between_steps(self, change: Callable[[], Any]) -> Any:
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

    # --- submitting -----------------------------------------------------------------------

    def system_prompt(self, adapter: str | None) -> str | None:
        """The system prompt ``adapter`` was trained behind (its ``tunelab.json``); None for the base."""
        return self.registry.system_prompt(adapter)

    def chat_messages(self, messages: list[dict], adapter: str | None = None) -> list[dict]:
        """``messages`` as the model is asked them: a conversation to an adapter trained behind
        a system prompt that does not start with a system message of its own gets that prompt
        as its first turn, by training's own rule
        (:func:`backend.data.normalized.behind_system`). Without it the base's template
        would put its own default system prompt (or none) where the adapter saw the trained one."""
        return behind_system(messages, self.system_prompt(adapter))

    def encode_chat(self, messages: list[dict], adapter: str | None = None) -> list[int]:
        """The prompt ids of a chat request to ``adapter`` (None: the base): its chat template
        with the generation prompt, behind the adapter's trained system prompt where the
        conversation does not start with a system message (:meth:`chat_messages`)."""
        messages = self.chat_messages(messages, adapter)
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def submit(self, prompt_ids: list[int], adapter: str | None = None, params: SamplingParams | None = None,
               *, asynchronous: bool = False) -> RequestHandle:
        """Queue a request; with ``asynchronous`` iterate it with ``async for`` in this loop."""
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
            request = Request(
                id=next(self._ids), prompt_ids=prompt_ids, internal_adapter=self.registry.bind(adapter),
                public_adapter=adapter, params=params,
                sync_queue=None if asynchronous else queue.Queue(),
                async_queue=asyncio.Queue() if asynchronous else None, loop=loop)
            if params.temperature and params.temperature > 0:
                request.generator = torch.Generator()
                request.generator.manual_seed(params.seed if params.seed is not None
                                              else int(time.time_ns() % (2**63)))
            self._pending.append(request)
            self._serving_flag.set(True)
            self.stats.requests += 1
            self._cond.notify_all()
        self.start()
        return RequestHandle(request, self._wake)

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
        if self.threads:
            own_intraop_threads(self.threads)  # this thread only; others default to 1 (backend.hardware.threads)
        batch: Batch | None = None
        with torch.inference_mode():
            while not self._stopping:
                self._apply_changes()
                with self._cond:
                    if not self._pending and batch is None:
                        self._serving_flag.set(False)  # under the lock: a new request raises it again
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
                            fresh = self._prefill(newcomers, joining=batch is not None)
                            # the running rows' pending tokens were emitted by the step that chose
                            # them: only the newcomers' first tokens are new here
                            first_new = 0 if batch is None else batch.size
                            batch = fresh if batch is None else self._merge(batch, fresh)
                            self._emit_and_prune(batch, first_row=first_new)
                        elif batch is not None:
                            self._step(batch)
                            self._emit_and_prune(batch)
                except Exception as exc:  # keep serving: fail the rows that broke it, not their batch-mates
                    log.exception("generation step failed")
                    involved = (batch.requests if batch else []) + [r for r in newcomers if not r.done
                                                                    and (batch is None or r not in batch.requests)]
                    batch = self._isolate(involved, exc)
                if batch is not None and batch.size == 0:
                    batch = None
                self._active = batch.requests if batch else []
                if batch is not None:
                    self._serving_flag.set(True)  # refreshed while a long spell of answers lasts
                self.registry.collect_retired()
            # shutting down: apply pending changes, fail what is left so no caller waits for ever
            self._apply_changes()
            for request in (batch.requests if batch else []) + list(self._pending):
                self._end(request, "cancelled", error="the server is shutting down")
            with self._cond:
                self._serving_flag.set(False)

    def _isolate(self, requests: list[Request], exc: Exception) -> Batch | None:
        """After a failed step: each row again alone, from its prompt and the tokens it has.

        A row that fails alone (its own input or adapter broke the step) ends with its
        own error; the others go on as one batch from their recomputed next token, so one
        broken request never fails its batch-mates. The failed step may have left the
        batch's cache half-updated, so nothing of it is reused.
        """
        survivors: list[Batch] = []
        for request in requests:
            if request.done:
                continue
            if request.cancelled:
                self._end(request, "cancelled")
                continue
            try:
                with self._model_lock:
                    survivors.append(self._prefill([request], resume=True, joining=bool(survivors)))
            except Exception as own:
                log.warning("request %s failed alone too: %s", request.id, error_text(own))
                self._end(request, "error", error=error_text(own))
        if not survivors:
            return None
        try:
            with self._model_lock:
                batch = survivors[0]
                for solo in survivors[1:]:
                    if not self._can_join:
                        raise TuneLabError("this base's cache cannot merge rows")
                    batch = self._merge(batch, solo)
                self._emit_and_prune(batch)
            return batch
        except Exception:  # cannot rebuild the batch: fail what is left, with the step's error
            log.exception("could not rebuild the batch after a failed step")
            for solo in survivors:
                for request in solo.requests:
                    self._end(request, "error", error=error_text(exc))
            return None

    def _take_pending(self, room: int) -> list[Request]:
        taken = []
        with self._cond:
            while self._pending and len(taken) < room:
                request = self._pending.popleft()
                if request.cancelled:
                    self._end(request, "cancelled")
                    continue
                taken.append(request)
        return taken

    def _prefill(self, requests: list[Request], *, resume: bool = False, joining: bool = False) -> Batch:
        """Prefill ``requests`` as one new batch; with ``resume`` each row's input is its
        prompt and the tokens it already generated (rebuilding a row after a failed step);
        ``joining``: the rows are about to be merged into a running batch."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids, mask = prefill_inputs(requests, pad, resume=resume, device=self.device)
        cache = new_cache(self.model.get_base_model().config, self.cache_plan, requests, input_ids.shape[1],
                          joining=joining)
        logits = self._forward(input_ids, mask, cache, [r.internal_adapter for r in requests])
        if isinstance(cache, PreallocatedCache):
            self.stats.kv_blocks += 1
        batch = Batch(requests=list(requests), mask=mask, cache=cache, next_ids=None)
        self.stats.prefills.append(len(requests))
        self._choose(batch, logits)
        return batch

    def _merge(self, old: Batch, new: Batch) -> Batch:
        """``new``'s rows join ``old``'s (:func:`backend.serving.batch.merge`), counted."""
        merged = merge(old, new, self.cache_plan)
        if isinstance(merged.cache, PreallocatedCache):
            if merged.cache is old.cache:
                self.stats.kv_joins_in_place += 1
            else:
                self.stats.kv_blocks += 1
        return merged

    def _step(self, batch: Batch) -> None:
        batch.grow_mask()
        blocks = batch.cache.allocations if isinstance(batch.cache, PreallocatedCache) else 0
        logits = self._forward(batch.next_ids[:, None], batch.mask, batch.cache,
                               [r.internal_adapter for r in batch.requests])
        if isinstance(batch.cache, PreallocatedCache) and batch.cache.allocations > blocks:
            self.stats.kv_growths += 1
        self._choose(batch, logits)

    def _forward(self, input_ids, mask, cache, adapter_names: list[str]):
        """The last position's logits (fp32) of every row, each row with its own adapter."""
        kwargs = dict(input_ids=input_ids, attention_mask=mask, position_ids=position_ids(mask, input_ids.shape[1]),
                      past_key_values=cache, use_cache=True)
        if self._accepts_logits_to_keep:
            kwargs["logits_to_keep"] = 1
        rows = input_ids.shape[0]
        self.stats.steps += 1
        self.stats.max_rows = max(self.stats.max_rows, rows)
        self.stats.step_rows.append(rows)
        with self._routing.rows(adapter_names, batched=not self.registry.needs_peft_path(adapter_names)):
            head = self.model.get_base_model().get_output_embeddings()
            if self._decoder is not None and type(head) is torch.nn.Linear:  # not wrapped by an adapter
                # the head on a 2-D (rows x hidden) input: on a (rows x 1 x hidden) one,
                # bf16 matmul on CPU copies the whole vocabulary x hidden head every call
                kwargs.pop("logits_to_keep", None)
                hidden = self._decoder(**kwargs).last_hidden_state[:, -1, :]
                return head(hidden).float()
            out = self.model.get_base_model()(**kwargs)
        return out.logits[:, -1, :].float()

    def _choose(self, batch: Batch, logits) -> None:
        for request in batch.requests:
            request.batch_rows_max = max(request.batch_rows_max, batch.size)
        batch.next_ids, batch.logprobs = choose(logits, batch.requests)

    def _emit_and_prune(self, batch: Batch, first_row: int = 0) -> None:
        """Emit the chosen token of rows ``first_row`` on; drop the rows that finished."""
        keep = list(range(first_row))
        chosen, logprobs = batch.next_ids.tolist(), batch.logprobs.tolist()  # one copy from the device per step
        for row, request in enumerate(batch.requests[first_row:], start=first_row):
            if request.cancelled:
                self._end(request, "cancelled")
                continue
            self.stats.tokens += 1
            event = self._detokenizer.advance(request, int(chosen[row]), float(logprobs[row]))
            if event.finish_reason is None:
                request.emit(event)
                keep.append(row)
            else:
                self._finish(request, event)
        if len(keep) < batch.size:
            batch.select(keep)

    def _end(self, request: Request, reason: str, *, error: str | None = None) -> None:
        """Finish ``request`` without a new token (cancelled, failed, shutting down)."""
        if not request.done:
            self._finish(request, self._detokenizer.last(request, reason, error=error))

    def _finish(self, request: Request, last: TokenEvent) -> None:
        if request.done:
            return
        self.registry.release(request.internal_adapter)
        self.stats.finished += 1
        self.stats.latencies.append(time.monotonic() - request.submitted_at)
        request.emit(last)


def _accepts(model, argument: str) -> bool:
    try:
        return argument in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
