"""The training subprocess: ``python -m backend.training.worker JOB_ID``.

Reads the job's request (RunSpec, data paths, data hash) from the store, trains with
:func:`backend.training.run.train_adapter`, writes progress as ``job_events`` and ends the
job and its adapter row as done, failed, cancelled or (interrupted) queued again. A run
with held-out rows marks its adapter done as soon as training has written it, then scores
it (the proof): the app serves the adapter meanwhile, and the job is done after the proof.

An entry point: :func:`main` builds the :class:`~backend.settings.Settings` from the
environment the job runner gave it and hands down what the run needs (base, store,
``trust_remote_code``, the native kernels' setting and cache). This module imports no
model library at its top, so a usage error is answered at once; the heavy run is
imported in :func:`run`, once.

Stopping: the store's ``cancel_requested`` flag is polled at most once a second;
SIGTERM makes the next check immediate. SIGTERM with the flag set cancels; SIGTERM
without it (the app or the machine shutting down) pauses: a checkpoint is saved and
the job goes back to the queue, to resume from it. While a finished adapter is scored,
SIGTERM stops the proof at once (:func:`prove_until_stopped`): a cancel ends the job
cancelled, a pause requeues it, and the next attempt scores the written adapter without
training it again.

Under ``accelerate launch -m backend.training.worker JOB_ID`` every rank trains and only the
main process touches the store.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from backend.adapter_folder import folder as adapter_folder
from backend.adapter_folder import is_complete, read_meta, update_meta
from backend.data.doctor import saved_report
from backend.data.normalized import read_rows
from backend.bases.resolve import resolve_base
from backend.errors import TuneLabError
from backend.hardware.threads import CoreYield
from backend.hparams import RunSpec
from backend.settings import Settings
from backend.store import Store, utcnow
from backend.training.checkpoints import checkpoint_step, drop_checkpoints, last_checkpoint
from backend.training.cpu.native import NativeBuild
from backend.proof.scores import BASELINE_FILE, judged_from_import
from backend.training.jobs import settle_adapter
from backend.training.estimate import planned_steps, record_run
from backend.training.plan import task_of
from backend.training.progress import PHASE_IMPORTS, PHASE_SCORING

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
CANCEL_POLL_S = 1.0


class StopFlags:
    """Cancel and pause, from the store flag (polled at most every ``poll_s``) and SIGTERM."""

    def __init__(self, store: Store | None, job_id: int, poll_s: float = CANCEL_POLL_S):
        self.store, self.job_id, self.poll_s = store, job_id, poll_s
        self.sigterm = False
        self._cancel = False
        self._checked = 0.0

    def on_sigterm(self, _signum, _frame) -> None:
        self.sigterm = True
        self._checked = 0.0  # look at the store on the next step

    def cancel_requested(self) -> bool:
        if self.store is None:  # non-main ranks: the main rank's answer is shared by the trainer
            return False
        now = time.monotonic()
        if not self._cancel and now - self._checked >= self.poll_s:
            self._checked = now
            job = self.store.get_job(self.job_id)
            self._cancel = bool(job is None or job.cancel_requested)
        return self._cancel

    def pause_requested(self) -> bool:
        return self.sigterm and not self.cancel_requested()


class ScoringStopped(BaseException):
    """SIGTERM while the worker scores a finished adapter: the proof stops at once (a
    BaseException, so the proof's own ``except Exception`` does not swallow it)."""


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def run(job_id: int, settings: Settings) -> int:
    """Train job ``job_id`` of the store in ``settings``; returns the process's exit code.

    The SIGTERM handler is installed and the job marked running before the heavy import,
    so a cancel or a failure at any moment ends the job with its status and reason."""
    main = _is_main_rank()
    store = Store(settings.db_url)
    job = store.get_job(job_id)
    if job is None:
        print(f"worker: no job {job_id} in {settings.db_url}", file=sys.stderr)
        return EXIT_USAGE
    flags = StopFlags(store if main else None, job_id)
    signal.signal(signal.SIGTERM, flags.on_sigterm)
    request = job.request
    paths = settings.paths
    run_dir = paths.run_dir(job_id)
    checkpoint = last_checkpoint(run_dir)

    def record(kind: str, **fields) -> None:
        if main:
            store.add_event(job_id, kind=kind, **fields)

    out_dir = adapter_folder(paths.adapters, job.adapter)
    # an earlier attempt wrote the weights and was stopped while scoring them: this one only scores
    written = any(e.kind == "proof" for e in store.events(job_id)) and is_complete(out_dir)
    served_early = False  # the adapter was marked done (and so served) before its proof

    def end(status: str, reason: str | None = None, meta: dict | None = None, code: int = EXIT_OK) -> int:
        if main:
            fields = dict(status=status, error=reason, pid=None,
                          finished_at=None if status == "queued" else utcnow())
            if status == "queued":  # a pause is not a failed attempt
                fields["attempts"] = max(0, job.attempts - 1)
            store.update_job(job_id, **fields)
            if served_early and status == "done":  # settled when scoring began; the endpoint's word on it stays
                store.upsert_adapter(job.adapter, meta=meta)
            else:
                settle_adapter(store, paths.adapters, job.adapter, status, reason, meta)
            record(status, message=reason or status)
        return code

    if main:
        store.update_job(job_id, pid=os.getpid(), status="running")
        if not written:  # a written adapter stays done (and served) while it is scored again
            store.upsert_adapter(job.adapter, status="running", job_id=job_id, error=None)
        record("attempt", step=checkpoint_step(checkpoint),
               message=f"attempt {job.attempts}" + (", the adapter is written: scoring it" if written else
                                                    f", resuming from {checkpoint.name}" if checkpoint else ""))
    record("phase", message=PHASE_IMPORTS)
    try:
        from backend.training import run as train  # the one heavy import: torch, transformers, peft, trl
    except Exception as exc:  # a broken install: the reason is the import's error
        traceback.print_exc()
        return end("failed", f"{type(exc).__name__}: {exc}", code=EXIT_FAILED)
    if flags.cancel_requested():
        return end("cancelled", "cancelled before training started")

    def on_progress(p: dict) -> None:
        kind = "start" if "resumed_from" in p else "progress"
        record(kind, step=p["step"], total_steps=p["total_steps"], loss=p.get("loss"),
               eval_loss=p.get("eval_loss"), tokens_per_s=p.get("tokens_per_s"), eta_s=p.get("eta_s"),
               message=f"resumed from step {p['resumed_from']}" if p.get("resumed_from") else None)

    try:
        spec = RunSpec.model_validate(request["spec"])
        base_ref = resolve_base(spec.base, settings)
        trainer = train.train_adapter if spec.method == "sft" else round_runner(paths)
        meta = read_meta(out_dir) if written else trainer(
            spec,
            base_ref=base_ref,
            train_file=Path(request["train_file"]),
            eval_file=Path(request["eval_file"]) if request.get("eval_file") else None,
            out_dir=out_dir,
            work_dir=run_dir,
            on_progress=on_progress,
            should_stop=flags.cancel_requested,
            should_pause=flags.pause_requested,
            resume=True,
            data_hash=request.get("data_hash", ""),
            overwrite=bool(request.get("overwrite")),
            plain_template=bool(request.get("plain_template")),
            trust_remote_code=settings.trust_remote_code,
            native_build=NativeBuild.from_settings(settings),
            on_phase=lambda text: record("phase", message=text),
            before_step=CoreYield(paths.serving_busy),  # the serving engine's answers go first
        )
    except train.TrainingCancelled as exc:
        drop_checkpoints(run_dir)
        return end("cancelled", exc.message)
    except train.TrainingPaused as exc:
        return end("queued", exc.message)
    except TuneLabError as exc:
        traceback.print_exc()
        return end("failed", str(exc), code=EXIT_FAILED)
    except Exception as exc:  # anything else is a bug or the machine: keep the reason, not the app
        traceback.print_exc()
        return end("failed", f"{type(exc).__name__}: {exc}", code=EXIT_FAILED)
    proof_s = 0.0
    if main and request.get("eval_file") and request.get("prove", True):
        # the weights are final: the adapter is done and served (the runner loads it on the
        # "proof" event) while the proof below fills in its score
        settle_adapter(store, paths.adapters, job.adapter, "done", meta=meta)
        served_early = True
        record("proof", message=PHASE_SCORING)
        proving = time.perf_counter()
        try:
            meta["proof"] = prove_until_stopped(flags, lambda: prove(request, spec, base_ref, settings, out_dir))
        except ScoringStopped:  # the adapter is kept and served either way
            if flags.cancel_requested():
                drop_checkpoints(run_dir)
                return end("cancelled", "cancelled while it was scored: the adapter is kept, without its score",
                           meta=meta)
            return end("queued", "interrupted while it was scored: it is scored again when it resumes", meta=meta)
        proof_s = time.perf_counter() - proving
    if main and job.attempts == 1 and not checkpoint and not written:  # a whole run, timed from being picked up
        remember_speed(settings, spec, meta, request, wall_s=(utcnow() - job.started_at).total_seconds(),
                       proof_s=proof_s)
    return end("done", meta=meta)


def prove_until_stopped(flags: StopFlags, proving):
    """``proving()``, stopped at once by SIGTERM (a cancel, or the app shutting down) with
    :class:`ScoringStopped`: a proof of long answers takes minutes, more than the job
    runner's grace before it kills the worker. The training's SIGTERM handler is put back."""

    def stop(signum, frame) -> None:
        flags.on_sigterm(signum, frame)
        raise ScoringStopped

    if flags.sigterm:  # it came between the end of training and now
        raise ScoringStopped
    earlier = signal.signal(signal.SIGTERM, stop)
    try:
        return proving()
    finally:
        signal.signal(signal.SIGTERM, earlier)


def remember_speed(settings: Settings, spec: RunSpec, meta: dict, request: dict, *, wall_s: float,
                   proof_s: float) -> None:
    """Record this run's measured speed for the plan card's next time estimate
    (:mod:`backend.training.estimate`); a failure to record never fails the run."""
    try:
        metrics = meta.get("metrics") or {}
        tokens = (saved_report(Path(request["train_file"]).parent).get("stats") or {}).get("tokens") or {}
        record_run(settings.paths.training_speed, base=spec.base, adapter=spec.name, metrics=metrics,
                   wall_s=wall_s, proof_s=proof_s, doctor_mean_tokens=tokens.get("mean"),
                   planned_steps=planned_steps(metrics.get("examples") or 0, spec.train.batch_size, spec.train.epochs))
    except Exception:
        traceback.print_exc()


def round_runner(paths):
    """What runs a ``method: dpo`` or ``method: kto`` job in place of
    :func:`backend.training.run.train_adapter`: the preference round (:mod:`backend.training.dpo`
    on pairs, :mod:`backend.training.kto` on single votes) on the job's data file, from its
    parent adapter's folder. Same call, so the job's life (cancel, pause, end) is the same."""
    from backend.training import dpo, kto  # heavy: torch, transformers, peft, trl
    from backend.training.preference_round import train_round

    rounds = {"dpo": (dpo.train_dpo_adapter, "pairs_file"), "kto": (kto.train_kto_adapter, "votes_file")}

    def run_round(spec: RunSpec, *, train_file: Path, eval_file=None, resume=False, native_build=None, **kwargs):
        parent = adapter_folder(paths.adapters, spec.parent)
        known = inspect.signature(train_round).parameters
        dropped = sorted(set(kwargs) - set(known))
        if dropped:  # a knob of supervised runs the round does not take yet: said, not fatal
            print(f"worker: the preference round ignores {', '.join(dropped)}", file=sys.stderr)
        train_round_of, data = rounds[spec.method]
        return train_round_of(spec, **{data: train_file}, parent_dir=parent,
                              **{k: v for k, v in kwargs.items() if k in known})

    return run_round


def prove(request: dict, spec: RunSpec, base_ref, settings: Settings, folder: Path) -> dict | None:
    """The proof of a finished run (base vs adapter on the held-out rows, the style judge,
    the "changed nothing" check, the forgetting prompts), stored in its ``tunelab.json``.
    A proof that fails leaves the adapter done and says why in ``proof_error``."""
    from backend.proof.on_model import evaluate_adapter  # heavy: torch, peft

    eval_file, train_file = Path(request["eval_file"]), Path(request["train_file"])
    try:
        return evaluate_adapter(folder, base_ref, eval_rows=eval_file, train_rows=train_file,
                                task=request.get("task") or task_of(spec.goal, read_rows(train_file)),
                                n_samples=0, system_prompt=spec.train.system_prompt, goal=spec.goal,
                                judged=judged_from_import(eval_file.parent),
                                baseline_cache=eval_file.parent / BASELINE_FILE, settings=settings)
    except Exception as exc:  # the adapter is good; only its proof is missing
        traceback.print_exc()
        update_meta(folder, proof_error=f"{type(exc).__name__}: {exc}")
        return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m backend.training.worker JOB_ID", file=sys.stderr)
        return EXIT_USAGE
    return run(int(argv[0]), Settings())


if __name__ == "__main__":
    sys.exit(main())
