"""The job runner: a queue of training jobs in the store, each run in its own process.

``submit`` puts a job in the store (status ``queued``); ``run_pending`` (or the
background thread of ``start``) takes queued jobs one at a time and runs each as
``python -m backend.training.worker JOB_ID``, so a crash or a cancel never takes the app down.
The worker reports progress as ``job_events`` rows; anyone (page, CLI) follows them
with :meth:`JobRunner.follow` or :meth:`JobRunner.progress`.

Life of a job::

    queued -> running -> done | failed | cancelled
              running -> queued   (interrupted: app shut down, or found orphaned by recover())

* cancel: a queued job is cancelled at once; a running one gets ``cancel_requested``
  and SIGTERM, stops after its current step, writes no adapter.
* SIGTERM without a cancel request (app or system shutdown) pauses: the worker saves a
  checkpoint and the job goes back to the queue, to resume from it.
* an adapter is handed to ``on_adapter_ready`` (the service hot-swaps it into the endpoint)
  as soon as its weights are final: when the worker starts scoring it (a ``proof``
  event; the adapter row is already ``done``), else when the job is done; a worker an
  earlier app process started, adopted by this one, is followed the same way. The proof
  fills its ``tunelab.json`` while it is already being served. A cancel or a pause stops
  the proof at once; a paused job's next attempt only scores (the worker's docstring).
* a worker gone without saying how it ended (killed, crashed) ends its job at the first
  look (:meth:`JobRunner.settle_if_gone`, from ``progress``/``wait``/``follow``/``cancel``):
  cancelled if asked, else failed with its log's tail, warnings left out.
* ``recover()`` at start-up re-queues jobs marked running whose process is gone; they
  resume from their last checkpoint, up to ``max_attempts`` tries.

A sweep (:func:`backend.training.plan.sweep_specs`) is submitted as one job per
configuration, every name checked before any is queued.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from backend.adapter_folder import folder as adapter_folder
from backend.adapter_folder import is_complete
from backend.errors import InvalidName, JobError
from backend.hparams import RunSpec
from backend.names import NAME_RULE
from backend.settings import PROJECT_ROOT, Settings
from backend.store import Store, utcnow
from backend.training.checkpoints import drop_checkpoints
from backend.training.cpu.memory import hugepage_malloc_env
from backend.training.launch import (RUN_TAG, kill_job, new_tag, nvidia_gpu_present, processes_of, signal_job,
                                     worker_command)
from backend.training.plan import sweep_specs
from backend.training.progress import activity, event_dict, scoring, this_attempt

log = logging.getLogger(__name__)

TERMINAL = ("done", "failed", "cancelled")
ACTIVE = ("queued", "running")
LOG_TAIL_LINES = 12
RANKS_AFTER_END_S = 10.0  # a multi-process job's ranks may outlive its end by this much, then are killed

class SamePlanActive(JobError):
    """The same configuration on the same data is already queued or running; queueing it
    again needs ``confirm=True`` (a double click must not train it twice)."""

    def __init__(self, jobs: list, message: str, fix: str):
        super().__init__(message, fix=fix)
        self.jobs = [j.id for j in jobs]


def same_run(request: dict) -> str:
    """What makes two queued runs the same run: everything in the request but the adapter's name."""
    spec = {k: v for k, v in (request.get("spec") or {}).items() if k != "name"}
    return json.dumps([spec, request.get("train_file"), request.get("eval_file"), request.get("data_hash")],
                      sort_keys=True, default=str)


# Called with an adapter's name and folder once its weights are final: the service loads it
# into the serving endpoint and returns True when it did (a "served" event is then recorded).
AdapterReady = Callable[[str, Path], "bool | None"]
AdapterRemoved = Callable[[str], None]


# --- processes -------------------------------------------------------------------------------


def worker_alive(pid: int | None, job_id: int) -> bool:
    """True when ``pid`` is a live ``backend.training.worker`` process for ``job_id`` (not a reused pid)."""
    if not pid:
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.parent.parent.is_dir() and Path("/proc/self").exists():
        try:
            args = cmdline.read_bytes().split(b"\0")
            status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[-1][:1]
        except OSError:
            return False
        return status != "Z" and b"backend.training.worker" in args and str(job_id).encode() in args
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


ATTEMPT_BANNER = "===== attempt "
_WARNING_LINE = re.compile(r"^\S.*:\d+: \w*Warning: ")


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` of the latest attempt's log, without Python's warning lines (a
    ``FutureWarning`` is not why a run failed): the reason of a worker that died without
    storing one."""
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace")
    text = text[text.rfind(ATTEMPT_BANNER):] if ATTEMPT_BANNER in text else text
    kept: list[str] = []
    skip_source = False
    for line in text.splitlines():
        if line.startswith(ATTEMPT_BANNER) or not line.strip():
            continue
        if _WARNING_LINE.match(line):
            skip_source = True  # warnings.warn prints the warning, then its source line, indented
            continue
        if skip_source and line.startswith((" ", "\t")):
            continue
        skip_source = False
        kept.append(line)
    return "\n".join(kept[-lines:])


def _waiting_parent(pid: int) -> bool:
    """True when ``pid`` has exited but its parent has not reaped it yet (a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[-1][:1] == "Z"
    except OSError:
        return False


def settle_adapter(store: Store, adapters_root: Path, name: str, status: str, reason: str | None = None,
                   meta: dict | None = None) -> None:
    """Set an adapter row's status after its job moved. A finished adapter already on
    disk (the one an ``overwrite`` job would have replaced) stays ``done``: a failed or
    cancelled retraining never hides the adapter that is still there."""
    fields: dict[str, Any] = dict(status=status, error=reason if status == "failed" else None)
    if meta is not None:
        fields["meta"] = meta
    if status != "done" and is_complete(adapter_folder(adapters_root, name)):
        fields = dict(status="done", error=None)
    store.upsert_adapter(name, **fields)


# --- the runner ------------------------------------------------------------------------------


class JobRunner:
    """Queue, run, cancel and recover training jobs. One per app process."""

    def __init__(self, settings: Settings, on_adapter_ready: AdapterReady | None = None,
                 on_adapter_removed: AdapterRemoved | None = None, *, max_attempts: int = 3,
                 poll_s: float = 0.5, grace_s: float = 60.0, python: str | None = None):
        self.settings = settings
        self.paths = settings.paths.ensure()
        self.store = Store(settings.db_url)
        self.on_adapter_ready = on_adapter_ready
        self.on_adapter_removed = on_adapter_removed
        self.max_attempts = max_attempts
        self.poll_s = poll_s
        self.grace_s = grace_s
        self.python = python or sys.executable
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._current: tuple[int, subprocess.Popen] | None = None
        self._tag: str | None = None  # the running job's tag when it runs several processes (launch.py)

    # submitting -----------------------------------------------------------------------------
    def submit(self, spec: RunSpec, train_file: Path | str, eval_file: Path | str | None = None,
               data_hash: str = "", sweep: str | None = None, *, overwrite: bool = False,
               plain_template: bool = False) -> int:
        """Queue one training run; returns the job id. Refuses invalid or taken names."""
        self._check_submittable([spec], train_file, eval_file, overwrite)
        return self._enqueue(spec, train_file, eval_file, data_hash, sweep, overwrite, plain_template)

    def submit_sweep(self, base_spec: RunSpec, variations: list[dict[str, float]] | None = None,
                     train_file: Path | str | None = None, eval_file: Path | str | None = None,
                     data_hash: str = "", *, plain_template: bool = False, confirm: bool = True) -> list[int]:
        """Queue the base config plus one job per variation (see :func:`backend.training.plan.suggest_sweep`).
        With ``confirm=False`` a sweep whose first run is already queued or running under another
        name (the same plan submitted twice) is refused with :class:`SamePlanActive`."""
        if train_file is None:
            raise JobError("submit_sweep needs train_file.", fix="Pass the data doctor's train.jsonl.")
        specs = sweep_specs(base_spec, list(variations or []))
        if not confirm:
            self._check_not_twice(specs[0], train_file, eval_file, data_hash)
        self._check_submittable(specs, train_file, eval_file, overwrite=False)
        return [self._enqueue(s, train_file, eval_file, data_hash, base_spec.name, False, plain_template)
                for s in specs]

    def _check_not_twice(self, spec: RunSpec, train_file, eval_file, data_hash: str) -> None:
        key = same_run({"spec": spec.model_dump(mode="json"), "train_file": str(Path(train_file).resolve()),
                        "eval_file": str(Path(eval_file).resolve()) if eval_file else None, "data_hash": data_hash})
        twins = [j for j in self.store.list_jobs(ACTIVE) if same_run(j.request or {}) == key]
        if twins:
            said = ", ".join(f"job {j.id} ({j.adapter}, {j.status})" for j in twins)
            raise SamePlanActive(twins, f"This plan is already training on the same data: {said}.",
                                 fix="Wait for it, cancel it, or confirm to queue a second copy of the same plan.")

    def _check_submittable(self, specs: list[RunSpec], train_file, eval_file, overwrite: bool) -> None:
        problems, invalid = [], False
        active = {j.adapter: j.id for j in self.store.list_jobs(ACTIVE)}
        for spec in specs:
            try:
                path = adapter_folder(self.paths.adapters, spec.name)
            except InvalidName as exc:
                problems.append(exc.message)
                invalid = True
                continue
            if spec.name in active:
                problems.append(f"adapter {spec.name!r} is already being trained by job {active[spec.name]}")
            elif not overwrite:
                row = self.store.get_adapter(spec.name)
                if is_complete(path) or (row is not None and row.status == "done"):
                    problems.append(f"an adapter named {spec.name!r} already exists")
        if not Path(train_file).is_file():
            problems.append(f"training data {str(train_file)!r} does not exist")
        if eval_file is not None and not Path(eval_file).is_file():
            problems.append(f"eval data {str(eval_file)!r} does not exist")
        if problems:
            kind = InvalidName if invalid else JobError
            raise kind("Cannot queue training: " + "; ".join(problems) + ".",
                           fix="Pick unused valid names (" + NAME_RULE + "), delete or overwrite the existing "
                           "adapter, and point at the data doctor's train.jsonl / eval.jsonl.")

    def _enqueue(self, spec, train_file, eval_file, data_hash, sweep, overwrite, plain_template) -> int:
        request = {
            "spec": spec.model_dump(mode="json"),
            "train_file": str(Path(train_file).resolve()),
            "eval_file": str(Path(eval_file).resolve()) if eval_file else None,
            "data_hash": data_hash,
            "overwrite": overwrite,
            "plain_template": plain_template,
        }
        job = self.store.add_job(spec.name, request, sweep=sweep)
        self.store.upsert_adapter(spec.name, base=spec.base, goal=spec.goal, status="queued", job_id=job.id,
                                  error=None, verdict=None, meta={"hyperparameters": request["spec"]})
        self.store.add_event(job.id, kind="queued", message=f"queued {spec.name}")
        self._wake.set()
        return job.id

    # cancelling -----------------------------------------------------------------------------
    def cancel(self, job_id: int) -> str:
        """Cancel a job; returns its status now ('cancelled', or 'running' until it stops)."""
        job = self.store.get_job(job_id)
        if job is None:
            raise JobError(f"No job {job_id}.", fix="List jobs to see their ids.")
        if job.status in TERMINAL:
            raise JobError(f"Job {job_id} ({job.adapter}) is already {job.status}; there is nothing to cancel.")
        if job.status == "queued":
            self._finish(job_id, "cancelled", "cancelled before it started")
            return "cancelled"
        self.store.update_job(job_id, cancel_requested=True)
        self.store.add_event(job_id, kind="cancel", message="cancel requested")
        self._signal(job_id, job.pid)
        return self.settle_if_gone(job_id)

    def _signal(self, job_id: int, pid: int | None, sig: int = signal.SIGTERM) -> None:
        with self._lock:
            current = self._current
        if current and current[0] == job_id and current[1].poll() is None:
            self._send(current[1], sig)
        elif worker_alive(pid, job_id):
            try:
                os.kill(pid, sig)
            except OSError:
                pass

    # running --------------------------------------------------------------------------------
    def run_pending(self) -> list[int]:
        """Run queued jobs one at a time until the queue is empty; returns the job ids run."""
        ran = []
        self._adopt_running()
        while not self._stop.is_set():
            job = self.store.claim_next_job()
            if job is None:
                break
            ran.append(job.id)
            self._run(job)
        return ran

    def worker_env(self) -> dict:
        """The environment of a training worker: this process's, plus the settings the
        worker builds its own from (home, store, model cache, native kernels, remote code)
        and glibc's huge-page malloc (:func:`backend.training.cpu.memory.hugepage_malloc_env`)."""
        env = {**os.environ, "TUNELAB_HOME": str(self.settings.home),
               "TUNELAB_DATABASE_URL": self.settings.db_url,
               "TUNELAB_NATIVE_KERNELS": "true" if self.settings.native_kernels else "false",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
               "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
               "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
        if self.settings.models_dir is not None:
            env["TUNELAB_MODELS_DIR"] = str(self.settings.models_dir)
        if self.settings.trust_remote_code:
            env["TUNELAB_TRUST_REMOTE_CODE"] = "1"
        return env if nvidia_gpu_present() else hugepage_malloc_env(env)  # CPU machinery: not on a GPU

    def _run(self, job) -> str:
        if job.cancel_requested:
            return self._finish(job.id, "cancelled", "cancelled before it started")
        run_dir = self.paths.run_dir(job.id)
        run_dir.mkdir(parents=True, exist_ok=True)
        env = self.worker_env()
        processes = processes_of(job.request)
        tag = new_tag(job.id) if processes > 1 else None
        if tag:
            env[RUN_TAG] = tag
        earlier = self.store.events(job.id)  # an earlier attempt's "proof" is not this one's
        banner = f"\n{ATTEMPT_BANNER}{job.attempts} at {utcnow().isoformat(timespec='seconds')}Z =====\n"
        with open(run_dir / "stdout.log", "a") as out, open(run_dir / "stderr.log", "a") as err:
            out.write(banner)
            err.write(banner)
            out.flush()
            err.flush()
            proc = subprocess.Popen(worker_command(self.python, job.id, processes), stdout=out, stderr=err,
                                    env=env, cwd=str(PROJECT_ROOT), start_new_session=True)
        self.store.update_job(job.id, pid=proc.pid)
        with self._lock:
            self._current, self._tag = (job.id, proc), tag
        try:  # the job stays ours until _after_exit has said how it ended
            code, announced = self._wait(job.id, proc, after_id=earlier[-1].id if earlier else 0)
            if tag:  # a rank left behind by a crash or a cancel goes with its job
                kill_job(tag)
            return self._after_exit(job.id, code, announced=announced)
        finally:
            with self._lock:
                self._current, self._tag = None, None

    def _send(self, proc: subprocess.Popen, sig: int) -> None:
        """Signal the running job: its worker, or every rank of a multi-process job (SIGTERM
        goes to the ranks, which stop together; SIGKILL to the launcher too)."""
        tag = self._tag
        if tag is None:
            proc.send_signal(sig)
            return
        signal_job(tag, sig, skip=proc.pid if sig != signal.SIGKILL else None)
        if sig == signal.SIGKILL:
            proc.kill()

    def _wait(self, job_id: int, proc: subprocess.Popen, after_id: int = 0) -> tuple[int, bool]:
        """Wait for the worker's exit code, signalling it on a cancel or a shutdown, and hand
        its adapter to ``on_adapter_ready`` the moment the worker starts scoring it (its weights
        are final then; events after ``after_id`` are this attempt's); returns the exit code
        and whether the adapter was handed over."""
        signalled_at = ended_at = None
        announced, seen = False, after_id
        while True:
            try:
                return proc.wait(timeout=self.poll_s), announced
            except subprocess.TimeoutExpired:
                pass
            if not announced:
                announced, seen = self._hand_over_if_scored(job_id, seen)
            if self._tag is not None and ended_at is None and self.store.get_job(job_id).status != "running":
                ended_at = time.monotonic()  # rank 0 has ended the job (e.g. cancelled before training)
            if ended_at is not None and time.monotonic() - ended_at > RANKS_AFTER_END_S:
                self._send(proc, signal.SIGKILL)  # ranks still waiting for it have nothing left to do
            if signalled_at is None:
                job = self.store.get_job(job_id)
                if job.cancel_requested or self._stop.is_set():
                    self._send(proc, signal.SIGTERM)  # cancel, or pause for the app's shutdown
                    signalled_at = time.monotonic()
            elif time.monotonic() - signalled_at > self.grace_s:
                self._send(proc, signal.SIGKILL)

    def _hand_over_if_scored(self, job_id: int, seen: int) -> tuple[bool, int]:
        """Hand the job's adapter to ``on_adapter_ready`` when the worker's events after ``seen``
        say it is being scored (its weights are final); returns whether it was handed over
        and the latest event id read."""
        events = self.store.events(job_id, after_id=seen)
        if not any(e.kind == "proof" for e in events):
            return False, events[-1].id if events else seen
        self._notify_ready(self.store.get_job(job_id))
        return True, events[-1].id

    def _after_exit(self, job_id: int, code: int, *, announced: bool = False) -> str:
        job = self.store.get_job(job_id)
        if job.status == "running":  # the worker died without saying how it ended
            if job.cancel_requested:
                return self._finish(job_id, "cancelled", "cancelled (the worker was stopped)")
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            tail = log_tail(self.paths.run_dir(job_id) / "stderr.log")
            return self._finish(job_id, "failed", f"The training process {how}." + (f"\n{tail}" if tail else ""))
        if job.status == "done" and not announced:
            self._notify_ready(job)
        return job.status

    def _notify_ready(self, job) -> None:
        path = adapter_folder(self.paths.adapters, job.adapter)
        try:
            if job.request.get("overwrite") and self.on_adapter_removed:
                self.on_adapter_removed(job.adapter)
            if self.on_adapter_ready and self.on_adapter_ready(job.adapter, path):
                self.store.add_event(job.id, kind="served", message=f"{job.adapter} is loaded in the serving endpoint")
        except Exception:  # a serving hiccup must not stop the queue
            log.exception("on_adapter_ready(%s) failed", job.adapter)
            self.store.add_event(job.id, kind="warning", message="the adapter is saved but could not be "
                                 "loaded into the server; load it by hand")

    def _finish(self, job_id: int, status: str, reason: str | None = None) -> str:
        """Mark a job (and its adapter row) as ended; used by the runner, not the worker."""
        job = self.store.update_job(job_id, status=status, error=reason if status != "done" else None,
                                    finished_at=utcnow(), pid=None)
        settle_adapter(self.store, self.paths.adapters, job.adapter, status, reason)
        self.store.add_event(job_id, kind=status, message=reason)
        if status == "cancelled":
            drop_checkpoints(self.paths.run_dir(job_id))
        return status

    def settle_if_gone(self, job_id: int) -> str:
        """The job's status, ended at once when its worker process is gone without having
        said how it ended (killed, crashed, or stopped while no runner waited for it):
        cancelled if a cancel was asked, else failed with the latest log's tail. A worker
        that is still a zombie has a parent runner that reaps it and says more; a job
        without a pid is still being started."""
        job = self.store.get_job(job_id)
        if job is None or job.status != "running" or not job.pid or _waiting_parent(job.pid):
            return job.status if job is not None else ""
        with self._lock:
            if self._current is not None and self._current[0] == job_id:
                return job.status  # ours: _after_exit says how it ended, with its exit code
        if worker_alive(job.pid, job.id):
            return job.status
        if job.cancel_requested:
            return self._finish(job_id, "cancelled", "cancelled (the worker was stopped)")
        tail = log_tail(self.paths.run_dir(job_id) / "stderr.log")
        return self._finish(job_id, "failed", "The training process stopped without finishing."
                            + (f"\n{tail}" if tail else ""))

    def _adopt_running(self) -> None:
        """Wait for workers started by an earlier app process that are still alive, handing
        each one's adapter over when it starts being scored, as :meth:`_wait` does (unless the
        earlier process already had it served)."""
        for job in self.store.list_jobs(("running",)):
            with self._lock:
                mine = self._current is not None and self._current[0] == job.id
            if mine or not worker_alive(job.pid, job.id):
                continue
            attempt = this_attempt(self.store.events(job.id))
            announced = any(e.kind == "served" for e in attempt)
            seen = attempt[0].id - 1 if attempt else 0
            while worker_alive(job.pid, job.id) and not self._stop.is_set():
                if not announced:
                    announced, seen = self._hand_over_if_scored(job.id, seen)
                time.sleep(self.poll_s)
            if not self._stop.is_set():
                self._after_exit(job.id, 0, announced=announced)

    # recovery -------------------------------------------------------------------------------
    def recover(self) -> list[int]:
        """Re-queue jobs marked running whose process is gone (they resume from their
        last checkpoint); fail those that used up ``max_attempts``. Returns re-queued ids."""
        requeued = []
        for job in self.store.list_jobs(("running",)):
            if worker_alive(job.pid, job.id):
                continue
            if job.cancel_requested:
                self._finish(job.id, "cancelled", "cancelled (its process had stopped)")
            elif job.attempts >= self.max_attempts:
                tail = log_tail(self.paths.run_dir(job.id) / "stderr.log")
                self._finish(job.id, "failed", f"Gave up after {job.attempts} attempts; the training process "
                             "stopped without finishing each time." + (f"\n{tail}" if tail else ""))
            else:
                self.store.update_job(job.id, status="queued", pid=None)
                settle_adapter(self.store, self.paths.adapters, job.adapter, "queued")
                self.store.add_event(job.id, kind="requeued", step=job.step, total_steps=job.total_steps,
                                     message=f"its process was gone at step {job.step}; queued to resume "
                                     f"(attempt {job.attempts + 1} of {self.max_attempts})")
                requeued.append(job.id)
        return requeued

    # background thread ----------------------------------------------------------------------
    def start(self) -> "JobRunner":
        """Recover, then keep running queued jobs in a background thread until :meth:`stop`."""
        if self._thread and self._thread.is_alive():
            return self
        self._stop.clear()
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="tunelab-jobs", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_pending()
            except Exception:
                log.exception("job runner loop failed; retrying")
            self._wake.wait(timeout=1.0)
            self._wake.clear()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread. A running job is paused (checkpoint saved, back in the queue) and
        resumes on the next :meth:`start`."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            current = self._current
        if current and current[1].poll() is None:
            self._send(current[1], signal.SIGTERM)
        if self._thread:
            self._thread.join(timeout if timeout is not None else self.grace_s + 5)

    # following ------------------------------------------------------------------------------
    def events(self, job_id: int, after_id: int = 0) -> list[dict]:
        return [event_dict(e) for e in self.store.events(job_id, after_id)]

    def follow(self, job_id: int, poll_s: float = 0.5, timeout: float | None = None) -> Iterator[dict]:
        """Yield the job's events as they arrive, until it ends (or ``timeout`` seconds pass)."""
        last, deadline = 0, (time.monotonic() + timeout) if timeout else None
        while True:
            self.settle_if_gone(job_id)
            job = self.store.get_job(job_id)
            if job is None:
                raise JobError(f"No job {job_id}.")
            for event in self.store.events(job_id, last):
                last = event.id
                yield event_dict(event)
            if job.status in TERMINAL or (deadline and time.monotonic() > deadline):
                for event in self.store.events(job_id, last):
                    last = event.id
                    yield event_dict(event)
                return
            time.sleep(poll_s)

    def wait(self, job_id: int, timeout: float = 600.0, poll_s: float = 0.2) -> str:
        """Block until the job ends; returns its status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.settle_if_gone(job_id)
            job = self.store.get_job(job_id)
            if job.status in TERMINAL:
                return job.status
            time.sleep(poll_s)
        raise JobError(f"Job {job_id} did not finish within {timeout:.0f} s.")

    def progress(self, job_id: int) -> dict[str, Any]:
        """A snapshot for a progress bar and a loss curve."""
        self.settle_if_gone(job_id)  # a worker gone without a word ends its job now
        job = self.store.get_job(job_id)
        if job is None:
            raise JobError(f"No job {job_id}.", fix="List jobs to see their ids.")
        events = self.store.events(job_id)
        progress = [e for e in events if e.kind == "progress"]
        latest = progress[-1] if progress else None

        def last_of(attr):
            return next((getattr(e, attr) for e in reversed(progress) if getattr(e, attr) is not None), None)

        starts = [e for e in events if e.kind == "start"]
        total = job.total_steps or (starts[-1].total_steps if starts else None)
        return {
            "job_id": job.id, "adapter": job.adapter, "sweep": job.sweep, "status": job.status,
            "attempts": job.attempts, "error": job.error,
            "step": job.step, "total_steps": total,
            "fraction": (job.step / total) if total else 0.0,
            "loss": last_of("loss"), "eval_loss": last_of("eval_loss"),
            "tokens_per_s": latest.tokens_per_s if latest else None,
            "eta_s": latest.eta_s if latest and job.status == "running" else None,
            "resumed_from": starts[-1].step if starts else 0,
            "loss_history": [{"step": e.step, "loss": e.loss, "eval_loss": e.eval_loss}
                             for e in progress if e.loss is not None or e.eval_loss is not None],
            "cancel_requested": job.cancel_requested,
            # after training the worker scores the adapter (backend/proof) before the job is done,
            # while the adapter is already served
            "phase": ("scoring" if job.status == "running" and scoring(events)
                      else "training" if job.status == "running" else None),
            "served": any(e.kind == "served" for e in this_attempt(events)),
            "activity": activity(job, events, total),
        }

    def jobs(self, statuses: tuple[str, ...] | None = None) -> list[dict]:
        return [{"id": j.id, "adapter": j.adapter, "sweep": j.sweep, "status": j.status, "step": j.step,
                 "total_steps": j.total_steps, "attempts": j.attempts, "error": j.error,
                 "created_at": j.created_at.isoformat() if j.created_at else None}
                for j in self.store.list_jobs(statuses)]

    def close(self) -> None:
        self.stop(timeout=0) if self._thread else None
        self.store.close()
