"""The operations that the page, the CLI and the assistant all call: the one door.

Data flows one way: UI / CLI / assistant -> service -> (store, jobs, client) -> engine.
A :class:`Service` is cheap; it opens the store lazily and talks to the serving
endpoint only through :class:`backend.serving.client.ServingClient`. Methods return plain,
JSON-able data (or pydantic models) and raise the typed errors of backend/errors.py.
Work that needs torch (tokenizers, the inspector, proof, blends, the merged export) goes
through :mod:`backend.studio.weights`, imported on first use (:func:`_weights`), so
importing the service loads no model library.
"""

from __future__ import annotations

import logging
import random
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from backend import adapter_folder as adapter_files
from backend.adapter_folder import AdapterMeta
from backend.bases.resolve import BaseRef, list_bases, resolve_base
from backend.data.doctor import SPLIT_NOTE, DataReport, ImportResult, check_files, import_files, saved_report
from backend.data.formats import CSV_SUFFIXES, JSON_SUFFIXES, TEXT_SUFFIXES
from backend.data.normalized import EVAL_FILE, TRAIN_FILE, read_rows
from backend.data.samples import sample_file, sample_files
from backend.errors import AdapterNotFound, JobError, TuneLabError
from backend.hparams import LoraSpec, RunSpec, TrainSpec
from backend.names import adapter_path, validate_name
from backend.proof.scores import BASELINE_FILE, CHECKABLE_TASKS, judged_from_import
from backend.serving.auth import api_token
from backend.serving.client import ServingClient
from backend.settings import Settings
from backend.store import VERDICTS, Store
from backend.studio import endpoint_sync
from backend.studio import leaderboard as board
from backend.studio import trust
from backend.studio.comparison import Answer, Comparison
from backend.studio.ratings import BASE, tallies
from backend.training.estimate import read_speed, write_speed
from backend.training.probe import measure as measure_speed
from backend.training.jobs import ACTIVE, JobRunner
from backend.training.plan import GPU_RUNS, DataFacts, PlanCard, kind_of_answers, labels_of, make_plan, task_of

log = logging.getLogger(__name__)

# Every file type the data doctor reads: the upload pickers offer exactly these.
UPLOAD_SUFFIXES = sorted(JSON_SUFFIXES | CSV_SUFFIXES | TEXT_SUFFIXES)


def _data_files(data_dir: str | Path) -> tuple[Path, Path | None]:
    """An import's training file and its held-out file (None when nothing was held out)."""
    folder = Path(data_dir)
    eval_file = folder / EVAL_FILE
    return folder / TRAIN_FILE, eval_file if eval_file.is_file() else None


def _weights():
    """The studio's half that needs torch (tokenizers, the inspector, proof, blends, the merged
    export); torch, transformers and peft load here, on first use: the service's one lazy seam."""
    from backend.studio import weights

    return weights


class Service:
    """The one door: built with the settings of its edge (the CLI, ``tunelab up``, a test)."""

    def __init__(self, settings: Settings, *, client: ServingClient | None = None, runner: JobRunner | None = None):
        self.settings = settings
        self.paths = settings.paths.ensure()
        self._store: Store | None = None
        self._client = client
        self._runner = runner
        self._gpu: bool | None = None
        self._facts = None  # this machine's training device (backend.training.recipe.DeviceFacts), asked once

    # plumbing ---------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.settings.db_url)
        return self._store

    @property
    def client(self) -> ServingClient:
        if self._client is None:
            self._client = ServingClient(self.server_url(), token=self.api_token())
        return self._client

    @property
    def runner(self) -> JobRunner:
        if self._runner is None:
            self._runner = JobRunner(self.settings, on_adapter_ready=self._on_adapter_ready)
        return self._runner

    def server_url(self) -> str:
        return self.settings.server_url or f"http://{self.settings.host}:{self.settings.port}"

    def api_token(self) -> str:
        return api_token(self.settings)

    def _on_adapter_ready(self, name: str, path: Path) -> bool:
        """Hot-swap a freshly trained adapter into the endpoint (if one is up), as soon as its
        weights are final (before its proof is done); True when it was loaded."""
        return endpoint_sync.hand_over(self.client, self.store, name, path)

    def sync_endpoint(self) -> list[str]:
        """Load every finished adapter the endpoint does not serve yet (e.g. trained by the
        CLI while no endpoint was up); returns the names loaded. Called by ``tunelab up``."""
        return endpoint_sync.load_missing(self.client, self.store, self.paths.adapters)

    # goal and plan ----------------------------------------------------------------------
    def plan(self, goal: str, *, data_dir: str | Path | None = None, n_examples: int = 0, name: str | None = None,
             max_runs: int | None = None) -> PlanCard:
        """The plan card for ``goal``; with ``data_dir`` (an import) its defaults, probes and
        "judged on" come from that data. ``max_runs`` runs when asked; else the machine's
        default: one on a CPU (it trains runs one after another), a sweep on a GPU."""
        if not goal or not goal.strip():
            raise TuneLabError("The goal is empty.", fix="Say in a few words what the adapter should do.")
        data = self.data_facts(data_dir) if data_dir else None
        gpu = self.gpu()
        runs = max_runs if max_runs is not None else (GPU_RUNS if gpu else 1)
        plan = make_plan(goal, n_examples=n_examples, data=data, name=name, max_runs=runs, gpu=gpu)
        gpus = self.train_device()["gpus"] if gpu else 0
        if gpus > 1:  # the page's default: every visible GPU, one process each
            plan.train = plan.train.model_copy(update={"processes": gpus})
        return plan

    def gpu(self) -> bool:
        """True when runs train on a CUDA GPU here (asked once; torch loads here, at the first plan)."""
        if self._gpu is None:
            from backend.hardware.device import device_kind  # heavy: torch

            self._gpu = device_kind() == "cuda"
        return self._gpu

    def train_device(self, plan: PlanCard | None = None, base: str | None = None, *, facts=None) -> dict:
        """What the Train tab offers here: ``gpus`` visible (0 on a CPU machine) with a note on
        the processes control, and ``quantize_offer``: what 4-bit / 8-bit would need when the
        plan's base does not fit one GPU in bf16 (:func:`backend.training.recipe.quantize_offer`;
        None when it fits, on a CPU, or without a plan). ``facts``: a described device (tests)."""
        from backend.training import recipe  # heavy: torch

        if facts is None:
            self._facts = self._facts or recipe.describe_device()
            facts = self._facts
        if facts.kind != "cuda":
            return {"gpus": 0, "device": facts.label(), "quantize_offer": None,
                    "processes_note": "1 process: this machine has no GPU (processes on a CPU share its cores)."}
        offer = None
        if plan is not None:
            spec = RunSpec(name=plan.name, base=base or "default", lora=plan.lora, train=plan.train)
            try:
                report = self.inspect(base or None, plan.lora)
            except TuneLabError:  # a base the inspector cannot read: nothing to offer
                report = None
            offer = recipe.quantize_offer(facts, spec, report) if report is not None else None
        return {"gpus": facts.count, "device": facts.label(), "quantize_offer": offer,
                "processes_note": f"{facts.count} GPU{'s' if facts.count != 1 else ''} visible ({facts.label()}): "
                                  "one process each; batch split between them."}

    def data_facts(self, data_dir: str | Path) -> DataFacts:
        """What a plan needs to know about an import: row counts, answer length, where the
        judging rows come from, the held-out rows themselves and the task they show."""
        folder = Path(data_dir)
        stats = saved_report(folder).get("stats") or {}
        train_file, eval_file = _data_files(folder)
        train_rows = read_rows(train_file) if train_file.is_file() else []
        held_out = read_rows(eval_file) if eval_file else []
        tokens = stats.get("tokens") or {}
        examples = stats.get("examples") or (len(train_rows) + len(held_out))
        mean = tokens["answer_total"] / examples if tokens.get("answer_total") and examples else None
        split = stats.get("split") or {}
        kind = kind_of_answers(train_rows + held_out)
        return DataFacts(train_rows=len(train_rows), eval_rows=len(held_out), mean_answer_tokens=mean,
                         eval_source=split.get("eval_source", "split"),
                         note=split.get("note") or (SPLIT_NOTE if held_out else "nothing is held out"),
                         held_out=held_out[:200], answers_kind=kind,
                         labels=labels_of(train_rows + held_out) if kind == "classification" else [])

    def run_spec(self, name: str, data_dir: str | Path, *, base: str = "default", goal: str = "",
                 lora: dict | None = None, train: dict | None = None) -> tuple[RunSpec, PlanCard]:
        """What ``tunelab train`` runs: the plan's defaults for this data (rank, rate, batch,
        epoch ceiling, early stopping, budget and system prompt), the knobs the person set
        on top. A rank set without an alpha keeps the default's alpha / r."""
        lora, train = dict(lora or {}), dict(train or {})
        plan = make_plan(goal or "", data=self.data_facts(data_dir), name=name)
        if "r" in lora and "alpha" not in lora:
            lora["alpha"] = max(1, round(lora["r"] * plan.lora.alpha / plan.lora.r))
        if "system_prompt" not in train:  # a goal-less style run has no prompt to speak of
            train["system_prompt"] = plan.system_prompt if goal.strip() or plan.kind != "style" else None
        spec = RunSpec(name=name, base=base, goal=goal, lora=plan.lora.model_validate({**plan.lora.model_dump(), **lora}),
                       train=plan.train.model_validate({**plan.train.model_dump(), **train}))
        return spec, plan

    def baseline(self, data_dir: str | Path, plan: PlanCard, *, base: str | None = None) -> dict | None:
        """The base scored on the import's held-out rows before any training, behind the
        plan's system prompt (zero-shot and with examples in the prompt), for goals whose
        answers can be checked; None for other goals or without held-out rows. Cached in
        the import's folder, where every adapter's proof finds the same base answers."""
        train_file, eval_file = _data_files(data_dir)
        if plan.kind not in CHECKABLE_TASKS or eval_file is None:
            return None
        return _weights().baseline_scores(self.resolve_base(base), eval_file, train_file, plan.kind,
                                          system_prompt=plan.system_prompt, goal=plan.goal,
                                          cache_file=Path(data_dir) / BASELINE_FILE, settings=self.settings)

    def timing(self, data_dir: str | Path, plan: PlanCard, *, base: str = "default", probe: bool = True) -> dict:
        """What the plan card's time estimate is made from (:attr:`PlanCard.timing`): this
        machine's measured speed on ``base`` (the last finished run's, else a short probe of a
        few training steps, stored for the next plan) and the import's row counts."""
        facts = self.data_facts(data_dir)
        tokens = (saved_report(Path(data_dir)).get("stats") or {}).get("tokens") or {}
        timing = {"n_train": facts.train_rows, "n_eval": facts.eval_rows, "doctor_mean_tokens": tokens.get("mean"),
                  "speed": None, "note": "measured once a run on this base finishes"}
        speed = read_speed(self.paths.training_speed, base)
        if speed is None and probe:  # in a child process (backend/training/probe.py); None if it failed
            measured = measure_speed(self.resolve_base(base), base=base, lora=plan.lora,
                                     batch_size=plan.train.batch_size, tokens_per_example=tokens.get("mean") or 64,
                                     max_length=plan.train.max_length, trust_remote_code=self.settings.trust_remote_code)
            speed = write_speed(self.paths.training_speed, measured) if measured is not None else None
        timing["speed"] = speed.model_dump() if speed is not None else None
        return timing

    # data -----------------------------------------------------------------------------------
    def check_data(self, files: list[str | Path], *, eval_files: list[str | Path] | None = None,
                   base: str | None = None, goal: str | None = None, max_length: int | None = None,
                   **kwargs) -> DataReport:
        """The data doctor's report; ``eval_files`` judge the adapter instead of rows held
        back from ``files``."""
        tokenizer, limit = _weights().tokenizer_and_limit(self.resolve_base(base), self.settings,
                                                          max_length or TrainSpec().max_length)
        return check_files([Path(f) for f in files], eval_files=[Path(f) for f in eval_files or []],
                           tokenizer=tokenizer, max_tokens=limit, max_line_bytes=self.max_line_bytes, goal=goal,
                           **kwargs)

    def import_data(self, files: list[str | Path], *, eval_files: list[str | Path] | None = None,
                    base: str | None = None, goal: str | None = None, max_length: int | None = None,
                    **kwargs) -> ImportResult:
        """Check and import; with errors (in any file, ``eval_files`` included) nothing is
        imported (DataError carries the report). ``eval_files`` become the eval split, and
        every row of ``files`` trains."""
        tokenizer, limit = _weights().tokenizer_and_limit(self.resolve_base(base), self.settings,
                                                          max_length or TrainSpec().max_length)
        return import_files([Path(f) for f in files], self.paths.uploads,
                            eval_files=[Path(f) for f in eval_files or []], tokenizer=tokenizer, max_tokens=limit,
                            max_line_bytes=self.max_line_bytes, goal=goal, **kwargs)

    @property
    def max_line_bytes(self) -> int:
        """The data doctor's line limit, from the setting ``max_line_kb``."""
        return self.settings.max_line_kb * 1024

    def render_chat(self, conversations: list[list[dict]], *, base: str | None = None) -> list[str]:
        """Examples as the base's chat template renders them (the data panel's preview)."""
        return _weights().chat_previews(self.resolve_base(base), self.settings, conversations)

    def samples(self) -> list[Path]:
        """The sample datasets shipped with TuneLab (inside the package)."""
        return sample_files()

    def sample(self, name: str) -> Path:
        """The shipped sample called ``name``; an unknown name is a DataError listing them."""
        return sample_file(name)

    # bases ------------------------------------------------------------------------------------
    def resolve_base(self, spec: str | None) -> BaseRef:
        return resolve_base(spec, self.settings)

    def list_bases(self) -> list[dict]:
        return list_bases(self.settings)

    def inspect(self, spec: str | None, lora: LoraSpec | None = None, **kwargs) -> dict:
        return _weights().inspect_base(self.resolve_base(spec), lora=lora, settings=self.settings, **kwargs)

    def inspect_text(self, spec: str | None, *, rank: int | None = None, alpha: int | None = None,
                     target: list[str] | None = None, as_json: bool = False) -> str:
        ref = self.resolve_base(spec)
        return _weights().inspect_command_output(ref.path, rank=rank, alpha=alpha, target=target,
                                                 as_json=as_json, settings=self.settings)

    # proof ----------------------------------------------------------------------------------
    def evaluate(self, name: str, *, n_samples: int = 5, task: str | None = None) -> dict:
        """Prove what an adapter learned on its own held-out split; stored in tunelab.json."""
        folder = self._complete_adapter(name)
        row = self.store.get_adapter(name)
        job = self.store.get_job(row.job_id) if row and row.job_id else None
        if job is None or not job.request.get("eval_file"):
            raise TuneLabError(f"Adapter {name!r} has no held-out split on record to evaluate on.",
                               fix="Train it from at least 5 examples imported by TuneLab (rows are held back "
                               "to judge it), or with a separate evaluation file (Data tab, --eval-data).")
        eval_file, train_file = Path(job.request["eval_file"]), job.request.get("train_file")
        kind = task or job.request.get("task") or task_of(row.goal or "", read_rows(train_file) if train_file else [])
        return _weights().evaluate_adapter(folder, self.resolve_base(row.base), eval_rows=eval_file,
                                           train_rows=train_file, task=kind, n_samples=n_samples,
                                           judged=judged_from_import(eval_file.parent),
                                           baseline_cache=eval_file.parent / BASELINE_FILE, settings=self.settings)

    # training -------------------------------------------------------------------------------
    def train(self, spec: RunSpec, data_dir: str | Path, *, data_hash: str = "") -> int:
        train_file, eval_file = _data_files(data_dir)
        return self.runner.submit(spec, train_file, eval_file, data_hash=data_hash or Path(data_dir).name)

    def train_plan(self, plan: PlanCard, data_dir: str | Path, *, base: str = "default",
                   data_hash: str = "", confirm: bool = True) -> list[int]:
        """Queue every configuration of a plan's sweep; one adapter each. ``confirm=False``
        refuses (:class:`~backend.training.jobs.SamePlanActive`) a plan whose run is already
        queued or running on the same data: the page's and the assistant's "train" ask first."""
        spec = RunSpec(name=plan.name, base=base, goal=plan.goal, lora=plan.lora, train=plan.train,
                       equalizer=plan.equalizer)
        variations = [c.variation() for c in plan.sweep if c.variation()]
        if plan.equalizer:  # a rank variation would leave the grid's per-cell ranks behind
            variations = [v for v in variations if "r" not in v]
        return self.train_sweep(spec, variations, data_dir, data_hash=data_hash, confirm=confirm)

    def train_sweep(self, spec: RunSpec, variations: list[dict], data_dir: str | Path, *,
                    data_hash: str = "", confirm: bool = True) -> list[int]:
        """Queue ``spec`` plus one run per one-knob variation; all names are checked first."""
        train_file, eval_file = _data_files(data_dir)
        return self.runner.submit_sweep(spec, variations, train_file, eval_file,
                                        data_hash=data_hash or Path(data_dir).name, confirm=confirm)

    def cancel(self, job_id: int) -> str:
        """Cancel a job; returns the job runner's answer, the job's status right after it:
        'cancelled' (it was queued) or 'running' (it stops at its next step). A job that
        is unknown or already over is a :class:`~backend.errors.JobError` saying so."""
        return self.runner.cancel(job_id)

    def progress(self, job_id: int) -> dict:
        return self.runner.progress(job_id)

    def jobs(self) -> list[dict]:
        return [self.runner.progress(job.id) for job in self.store.list_jobs()]

    # adapters -------------------------------------------------------------------------------
    def adapter_names(self, status: str | None = None) -> list[str]:
        """Every adapter's name (or those with ``status``, e.g. 'done'), oldest first."""
        return [row.name for row in self.store.list_adapters(status=status)]

    def adapters(self) -> list[dict]:
        counted = tallies(self.store.ratings())  # once for the whole list, not once per adapter
        return [self._describe(row, counted) for row in self.store.list_adapters()]

    def adapter(self, name: str) -> dict:
        row = self.store.get_adapter(name)
        if row is None:
            raise AdapterNotFound(name, self.adapter_names())
        return self._describe(row, tallies(self.store.ratings()))  # win rates need the base rows too

    def badges(self) -> dict[str, str]:
        """Each adapter's badge, shown wherever the page lists adapters: the person's verdict and,
        where there is one, the proof's suggestion (:func:`backend.studio.trust.verdict_badge`)."""
        badges = {}
        for row in self.store.list_adapters():
            verdict = (self.adapter_meta(row.name).proof or {}).get("verdict")
            suggestion = verdict.get("suggestion") if isinstance(verdict, dict) else None
            badges[row.name] = trust.verdict_badge(row.verdict, suggestion)
        return badges

    def adapters_task(self, names: list[str]) -> str | None:
        """The task the first of ``names`` that has a proof was judged on ('classification', ...):
        what Compare and Chat go by when the session has no plan (e.g. after a reload)."""
        known = set(self.adapter_names())
        for name in names:
            task = (self.adapter_meta(name).proof or {}).get("task") if name in known else None
            if task:
                return task
        return None

    def adapter_meta(self, name: str) -> AdapterMeta:
        """The typed view of an adapter's ``tunelab.json`` (empty while it has none)."""
        return AdapterMeta.of(adapter_path(self.paths.adapters, name))

    def leaderboard(self, sweep: str | None = None) -> list[dict]:
        """Finished adapters side by side, ranked per sweep with the recommended one marked
        (the rule: :mod:`backend.studio.leaderboard`); only ``sweep``'s when given. An adapter
        belongs to the sweep its job was queued in; one trained alone is a sweep of its own."""
        sweeps = {job.id: job.sweep or (job.request or {}).get("sweep") for job in self.store.list_jobs()}
        records = []
        for row in self.store.list_adapters(status="done"):
            group = sweeps.get(row.job_id) or row.name
            if sweep is not None and group != sweep:
                continue
            folder = adapter_path(self.paths.adapters, row.name)
            try:
                meta = AdapterMeta.of(folder)
            except ValueError as exc:  # an unreadable tunelab.json: listed, without a score
                log.warning("leaderboard: %s has an unreadable %s: %s", row.name, adapter_files.META_FILE, exc)
                meta = AdapterMeta()
            weights = folder / adapter_files.WEIGHTS_FILE
            records.append(board.Record(name=row.name, sweep=group, proof=meta.proof, metrics=meta.metrics,
                                        size_bytes=weights.stat().st_size if weights.is_file() else None))
        return board.leaderboard(records)

    def being_scored(self, name: str) -> bool:
        """True while a finished adapter (already served) is still being scored by its job."""
        row = self.store.get_adapter(name)
        return row is not None and self._being_scored(row)

    def _being_scored(self, row) -> bool:
        job = self.store.get_job(row.job_id) if row.status == "done" and row.job_id else None
        return job is not None and job.status == "running" and self.progress(job.id)["phase"] == "scoring"

    def _describe(self, row, counted: dict) -> dict:
        folder = adapter_path(self.paths.adapters, row.name)
        rating = counted.get(row.name)
        return {
            "name": row.name, "base": row.base, "status": row.status, "scoring": self._being_scored(row),
            "goal": row.goal,
            "verdict": row.verdict, "error": row.error, "job_id": row.job_id,
            "path": str(folder) if folder.is_dir() else None, "meta": adapter_files.read_meta(folder),
            "ratings": rating.to_dict() if rating else None,
        }

    def delete_adapter(self, name: str) -> None:
        """Unload an adapter from the endpoint and delete its folder and row. Refused while a
        job still trains or scores it (its worker would write the folder back)."""
        if self.store.get_adapter(name) is None:
            raise AdapterNotFound(name, self.adapter_names())
        busy = [job for job in self.store.list_jobs(ACTIVE) if job.adapter == name]
        if busy:
            job = busy[0]
            doing = ("queued to train it" if job.status == "queued" else
                     "scoring it" if self.progress(job.id)["phase"] == "scoring" else "training it")
            raise JobError(f"Adapter {name} cannot be deleted now: job {job.id} is still {doing}.",
                           fix=f"Wait for job {job.id} to end, or cancel it, then delete {name}.")
        folder = adapter_path(self.paths.adapters, name)
        try:
            self.client.unload_adapter(name)
        except AdapterNotFound:
            pass  # it was not loaded: nothing to unload
        except Exception as exc:  # endpoint down: the files go either way; it will not restore them
            log.warning("Could not unload %s from %s: %s", name, self.server_url(), exc)
        if folder.is_dir():
            shutil.rmtree(folder)
        self.store.delete_adapter(name)

    def mark(self, name: str, verdict: str | None) -> dict:
        """Mark an adapter success or fail (or clear with None). The person decides."""
        if verdict is not None and verdict not in VERDICTS:
            raise TuneLabError(f"Verdict {verdict!r} is not one of {', '.join(VERDICTS)}.",
                               fix="Mark an adapter 'success' or 'fail'.")
        if self.store.get_adapter(name) is None:
            raise AdapterNotFound(name, self.adapter_names())
        self.store.upsert_adapter(name, verdict=verdict)
        folder = adapter_path(self.paths.adapters, name)
        if folder.is_dir():
            adapter_files.update_meta(folder, verdict=verdict)
        return self.adapter(name)

    # serving, comparing, rating ----------------------------------------------------------------
    def models(self) -> list[str]:
        """Names the endpoint serves: the base first, then adapters."""
        return [m["id"] for m in self.client.models()]

    def chat(self, model: str, messages: list[dict], **params) -> str:
        return self.client.chat(model, messages, **params)

    def stream_chat(self, model: str, messages: list[dict], **params) -> Iterator[str]:
        """The answer's text as it is generated (the playground chat)."""
        return self.client.stream_chat(model, messages, **params)

    def compare(self, prompt: str, models: list[str], *, system_prompt: str | None = None,
                blind: bool = False, max_tokens: int = trust.COMPARE_MAX_TOKENS, seed: int | None = None,
                temperature: float = 0.0) -> Comparison:
        """One prompt answered by each model (one batch in the engine), optionally blind.

        Every model gets the same messages and the same sampling: greedy by default; with a
        temperature, one seed (``seed``, else one drawn here) for all, recorded on the result."""
        if not prompt.strip():
            raise TuneLabError("The comparison prompt is empty.", fix="Type a prompt or pick a probe prompt.")
        if not 0 <= temperature <= 2:
            raise TuneLabError(f"Temperature {temperature!r} is not between 0 and 2.", fix="Use 0 for greedy.")
        if system_prompt is None:
            system_prompt = self.shared_system_prompt(models)
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": prompt}]
        sample_seed = (seed if seed is not None else random.randrange(2**31)) if temperature else None
        params = dict(max_tokens=max_tokens, temperature=float(temperature))
        if sample_seed is not None:
            params["seed"] = sample_seed
        texts = self.client.compare(messages, models, **params)
        comparison = Comparison(id=uuid.uuid4().hex[:12], prompt=prompt, blind=blind, temperature=float(temperature),
                                max_tokens=max_tokens, seed=sample_seed, system_prompt=system_prompt or None)
        order = list(models)
        if blind:
            random.Random(seed).shuffle(order)
        for i, model in enumerate(order):
            label = f"Answer {chr(65 + i)}" if blind else model
            comparison.answers.append(Answer(model=model, label=label, text=texts[model]))
        return comparison

    def shared_system_prompt(self, models: list[str]) -> str | None:
        """The system prompt the compared adapters were trained with, when they agree.

        An adapter trained behind a system prompt is asked the way it was trained; the
        base gets the same messages, so the comparison stays like for like.
        """
        known = set(self.adapter_names())
        prompts = {self.adapter_meta(model).system_prompt or "" for model in models if model in known}
        prompts.discard("")
        return prompts.pop() if len(prompts) == 1 else None

    def rate(self, comparison: Comparison, model: str, *, score: int = 0, best: bool = False) -> None:
        """Store a vote on one answer of ``comparison``. Picking one Best also stores the answers
        not yet rated there as shown and not picked (score 0): Best is then a game in the arena
        and a preference pair, as :mod:`backend.studio.arena` says (a lone Best was neither)."""
        answer = next((a for a in comparison.answers if a.model == model), None)
        if answer is None:
            raise TuneLabError(f"Model {model!r} is not part of comparison {comparison.id}.",
                               fix=f"Rate one of: {', '.join(a.model for a in comparison.answers)}.")
        if score not in (-1, 0, 1):
            raise TuneLabError(f"Score {score!r} is not -1, 0 or +1.", fix="Use 👍 (+1) or 👎 (-1).")
        known = set(self.adapter_names())
        others = [(a, 0, False) for a in comparison.answers if a is not answer] if best else []
        rated = {row.model for row in self.store.ratings(comparison=comparison.id)} if others else set()
        for shown, vote, picked in [(answer, score, best), *others]:
            stored_model = shown.model if shown.model in known else BASE
            if shown is answer or stored_model not in rated:
                self.store.add_rating(comparison=comparison.id, model=stored_model, prompt=comparison.prompt,
                                      output=shown.text, score=vote, best=picked, blind=comparison.blind)

    def tallies(self) -> dict[str, dict]:
        return {name: t.to_dict() for name, t in tallies(self.store.ratings()).items()}

    # blending and export -------------------------------------------------------------------------
    def _complete_adapter(self, name: str) -> Path:
        validate_name(name)
        folder = adapter_path(self.paths.adapters, name)
        if not adapter_files.is_complete(folder):
            raise AdapterNotFound(name, [p.name for p in adapter_files.scan(self.paths.adapters)])
        return folder

    def strength(self, name: str, strength: float, *, new_name: str | None = None) -> str:
        src = self._complete_adapter(name)
        new_name = validate_name(new_name or f"{name}-x{strength:g}".replace(".", "p"))
        _weights().scale_adapter(src, adapter_path(self.paths.adapters, new_name), strength)
        self._register_derived(new_name, src)
        return new_name

    def blend(self, a: str, b: str, wa: float, wb: float, *, new_name: str | None = None) -> str:
        src_a, src_b = self._complete_adapter(a), self._complete_adapter(b)
        new_name = validate_name(new_name or f"{a}-{b}-blend"[:64])
        _weights().blend_adapters(src_a, src_b, adapter_path(self.paths.adapters, new_name), wa, wb)
        self._register_derived(new_name, src_a)
        return new_name

    def _base_of(self, name: str, folder: Path) -> str | None:
        """The base adapter ``name`` was made for: the store's record, else its ``tunelab.json``'s."""
        row = self.store.get_adapter(name)
        if row is not None:
            return row.base
        recorded = AdapterMeta.of(folder).base
        return recorded.spec if recorded else None

    def _register_derived(self, name: str, source: Path) -> None:
        folder = adapter_path(self.paths.adapters, name)
        self.store.upsert_adapter(name, base=self._base_of(source.name, folder) or "", status="done",
                                  goal=AdapterMeta.of(folder).goal, meta={"derived": True})
        self._on_adapter_ready(name, folder)

    def export(self, name: str, dest: str | Path, *, merged: bool = False) -> Path:
        """Copy the PEFT folder (loadable by vLLM/TGI/LoRAX/peft), or write a merged model."""
        src = self._complete_adapter(name)
        dest = Path(dest).expanduser()
        if dest.exists() and any(dest.iterdir()):
            raise TuneLabError(f"Export folder {str(dest)!r} is not empty.",
                               fix="Choose a new or empty folder; nothing was written.")
        if not merged:
            shutil.copytree(src, dest, dirs_exist_ok=True)
            return dest
        ref = resolve_base(self._base_of(name, src), self.settings)
        return _weights().merge_into_base(src, ref, self.settings, dest)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
