"""The assistant's tools, bound to one service and one session's state.

Each tool calls the same :class:`backend.studio.service.Service` methods the page's buttons
call (the buttons call many of these tools themselves), updates the per-session
:class:`~backend.studio.session.SessionState`, and returns a
:class:`~backend.studio.session.ToolResult` whose text is built only from what the service
actually returned; a failure is a result with ``ok=False``, never an exception.

The tools as langchain tools for an agent: :mod:`backend.studio.assistant.agent`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable

from pydantic import ValidationError

from backend.bases.inspect_views import heatmap, render_text
from backend.data.columns import (IMPORT_COLUMNS_LABEL, INPUT_COLUMN_LABEL, OUTPUT_COLUMN_LABEL,  # noqa: F401 - the page's
                                   choose_on_page, resolve_columns, table_of)
from backend.data.doctor import judged_on
from backend.data.samples import SAMPLES_DIR
from backend.errors import DataError
from backend.studio.arena_tools import ArenaTools
from backend.studio.describe import describe_cancel, describe_job, describe_tally, proof_lines, served_text
from backend.studio.leaderboard import sweep_summary
from backend.studio.plan_form import resize_plan
from backend.studio.session import BASE_CHOICE, SessionState, ToolResult, failed, tool
from backend.studio.trust import temperature_of
from backend.training.jobs import ACTIVE, SamePlanActive
from backend.training.plan import PlanCard, baseline_text
from backend.words import counted

logger = logging.getLogger(__name__)

SAME_PLAN_ASK = "To train a second copy anyway, say *train again* (or click **Train it again anyway**)."


def finished_sweeps(jobs: list[dict]) -> list[str]:
    """The sweeps of ``jobs`` (progress snapshots) whose runs are all over, in the order they
    were queued; a run queued alone is a sweep named after its adapter, as on the leaderboard."""
    groups: dict[str, list[dict]] = {}
    for job in jobs:
        groups.setdefault(job.get("sweep") or job["adapter"], []).append(job)
    return [sweep for sweep, runs in groups.items() if all(run["status"] not in ACTIVE for run in runs)]


class AssistantTools:
    """The tools, bound to one service and one session's state."""

    def __init__(self, service, state: SessionState, *, log: list | None = None):
        self.service = service
        self.state = state
        self.log: list[tuple[str, ToolResult]] = log if log is not None else []
        self.arena = ArenaTools(service, state, log=self.log, compare=self.compare)  # ranking, rounds

    # goal and plan ----------------------------------------------------------------------
    @tool
    def set_goal(self, goal: str, runs: int | None = None) -> ToolResult:
        """Set the goal in the person's words and propose a plan card for it."""
        plan = self.service.plan(goal, data_dir=self.state.data_dir, max_runs=runs)  # None: the machine's default
        self.state.goal, self.state.plan, self.state.plan_edited = goal.strip(), plan, False
        self.state.compare_temperature = self.state.chat_temperature = None  # the new goal's default
        self._score_base()
        self._time_plan()
        return ToolResult(True, self.state.plan.render_markdown(), {"plan": self.state.plan.model_dump()})

    def _score_base(self) -> None:
        """Put the base's score on the held-out rows on the plan card (checkable goals only);
        a failure is said on the card, never raised: the plan stands without it."""
        plan, data_dir = self.state.plan, self.state.data_dir
        if plan is None or not data_dir:
            return
        try:
            baseline = self.service.baseline(data_dir, plan, base=self.state.base or None)
        except Exception as exc:  # the base could not answer: say so on the card
            logger.warning("baseline failed: %s", exc)
            baseline = {"error": str(exc)}
        if baseline is not None:
            self.state.plan = plan.model_copy(update={"baseline": baseline})

    def _time_plan(self) -> None:
        """Put how long the plan takes on this machine on the card (once data is imported);
        a failure is logged, never raised: the plan stands without it."""
        plan, data_dir = self.state.plan, self.state.data_dir
        if plan is None or not data_dir:
            return
        try:
            timing = self.service.timing(data_dir, plan, base=self.train_base())
        except Exception as exc:
            logger.warning("time estimate failed: %s", exc)
            timing = {"speed": None, "note": f"no estimate ({type(exc).__name__}: {exc})"}
        self.state.plan = self.state.plan.model_copy(update={"timing": timing})

    @tool
    def show_plan(self, runs: int | None = None) -> ToolResult:
        """Show the current plan card (resized to the data; ``runs`` changes the number of runs)."""
        if self.state.plan is None:
            return ToolResult(False, "There is no plan yet: no goal has been set.")
        if runs is not None:
            try:
                self.state.plan = resize_plan(self.state.plan, runs)
            except ValidationError as exc:
                return failed(exc)
        return ToolResult(True, self.state.plan.render_markdown())

    # data -----------------------------------------------------------------------------------
    @tool
    def add_examples(self, paths: list[str], eval_paths: list[str] | None = None, input_column: str | None = None,
                     output_column: str | None = None) -> ToolResult:
        """Check example files (JSONL, CSV, TXT) with the data doctor and import them.

        ``eval_paths``: separate evaluation files whose rows judge the adapter instead of
        rows held back from ``paths``; None keeps the session's (if any), [] holds rows
        back. ``input_column`` / ``output_column``: the columns (CSV) or fields (JSONL) with
        the inputs and the answers; a table whose columns have no known names imports
        nothing until they are chosen (the result asks, with a guess). With errors nothing
        is imported and the previous data stays in place.
        """
        return self._import(paths, eval_paths, input_column, output_column)

    @tool
    def choose_columns(self, input_column: str | None = None, output_column: str | None = None) -> ToolResult:
        """Read the current file by these columns: ``input_column`` holds the inputs, ``output_column``
        the answers (one left out is guessed), and import it: the file waiting for its columns, else
        the imported one."""
        files = self.state.pending_paths or self.state.data_paths
        if not files:
            return ToolResult(False, "There is no file to choose columns of yet: drop a CSV or JSONL file first.")
        if table_of(files) is None:
            return ToolResult(False, f"{', '.join(Path(f).name for f in files)} has no columns to choose: its "
                                     "records are read by their keys.")
        if input_column is None and output_column is None:
            return ToolResult(False, "Which columns? Say e.g. “use email as the input and label as the answer”.")
        return self._import(files, None, input_column, output_column)

    def _import(self, paths, eval_paths, input_column, output_column) -> ToolResult:
        files = [str(p) for p in paths if str(p).strip()]
        held = [str(p) for p in (self.state.eval_paths if eval_paths is None else eval_paths) if str(p).strip()]
        if not files:
            return ToolResult(False, "No files were given.")
        for given in files + held:  # the page and the assistant read example files only inside the home,
            self.service.settings.data_source(given, SAMPLES_DIR)  # TUNELAB_DATA_ROOTS or the samples
        missing = [f for f in files + held if not Path(f).is_file()]
        if missing:
            return ToolResult(False, f"These files do not exist: {', '.join(missing)}.")
        columns, asked = self._columns(files, input_column, output_column)
        if asked is not None:
            return asked
        plan = self.state.plan
        self.state.data_error = ""
        try:
            imported = self.service.import_data(files, eval_files=held, base=self.state.base or None,
                                                goal=self.state.goal or None,
                                                system_prompt=plan.system_prompt if plan else None,
                                                column_hint=choose_on_page(), **columns)
        except DataError as exc:
            if self.state.column_guess:  # the pickers act on these files until they import
                self.state.pending_paths = files
            report = exc.report
            text = report.render_text() if report is not None else ""
            kept = (f" The previous data ({self.state.n_examples} examples) is still in place."
                    if self.state.data_dir else "")
            self.state.data_error = text or exc.message
            return ToolResult(False, f"{exc.message}{kept}\n{text}".strip(),
                              {"report": report.to_dict() if report is not None else None})
        report = imported.report
        n_train, n_eval = len(report.train), len(report.eval)
        self.state.data_dir = str(imported.folder)
        self.state.data_hash = report.content_hash or Path(imported.folder).name
        self.state.n_examples = n_train + (0 if held else n_eval)  # the examples of the training files
        self.state.data_files = [Path(f).name for f in files]
        self.state.data_paths, self.state.eval_paths = files, held
        self.state.data_judged = judged_on(report.stats["split"])
        self.state.data_report, self.state.data_error = report.render_text(), ""
        self.state.data_preview = self._preview(report)
        self.state.data_columns = {"input": columns["input_column"], "output": columns["output_column"]} if columns else {}
        self.state.pending_paths = []
        self.state.data_labels = (report.stats.get("labels") or {}).get("text", "")
        read_by = (f" (input {columns['input_column']!r}, answer {columns['output_column']!r})" if columns else "")
        text = (f"Imported {n_train} training and {n_eval} eval examples from {', '.join(self.state.data_files)}"
                + (f" and {', '.join(Path(f).name for f in held)}" if held else "") + f"{read_by}. "
                f"{self.state.data_judged}." + (f" {self.state.data_labels}" if self.state.data_labels else ""))
        if report.warnings:
            text += (f" {counted(len(report.warnings), 'warning')}: "
                     + "; ".join(str(w) for w in report.warnings[:3]))
        if self.state.plan is not None and not self.state.plan_edited:
            plan = self.state.plan
            self.state.plan = self.service.plan(plan.goal, data_dir=self.state.data_dir, name=plan.name,
                                                max_runs=len(plan.sweep))
            self._score_base()
            self._time_plan()
            text += (f" The plan's defaults are now chosen for {n_train} training examples, and "
                     f"{n_eval} held-out rows will judge the result.")
        elif self.state.plan is not None:  # the person's edits stand; only the baseline and the time are new
            self._score_base()
            self._time_plan()
        if self.state.plan is not None and self.state.plan.baseline and not self.state.plan.baseline.get("error"):
            text += f" Before training, {baseline_text(self.state.plan.baseline)}."
        return ToolResult(True, text, {"folder": self.state.data_dir})

    def _columns(self, files: list[str], input_column: str | None, output_column: str | None):
        """The columns to import ``files`` by, or the question that imports nothing yet
        (:func:`backend.data.columns.resolve_columns`); the first table's preview goes to the Data tab."""
        state = self.state
        if input_column is None and output_column is None and files == state.data_paths:  # judged another way
            input_column, output_column = state.data_columns.get("input"), state.data_columns.get("output")
        guess = table_of(files)
        columns, question = resolve_columns(guess, input_column, output_column, choose_on_page)
        state.column_guess = guess.to_dict() if guess else {}
        if not question:
            return columns, None
        state.pending_paths = files
        choose = input_column is None and output_column is None  # the question, not a wrong column
        return {}, ToolResult(False, question, {"columns": state.column_guess, "choose": choose})

    def _preview(self, report) -> list[str]:
        conversations = [e.messages for e in report.preview]
        try:
            return self.service.render_chat(conversations, base=self.state.base or None)
        except Exception as exc:  # a base without a usable template: show the normalized turns
            logger.warning("chat-template preview failed: %s", exc)
            return ["\n".join(f"{m['role']}: {m['content']}" for m in c) for c in conversations]

    # bases -------------------------------------------------------------------------------------
    @tool
    def pick_base(self, spec: str) -> ToolResult:
        """Pick the base to train on: 'default', a hub id, a local folder or a .gguf file."""
        ref = self.service.resolve_base(spec)
        self.state.base = spec.strip()
        return ToolResult(True, f"Base set to {ref.name} ({ref.kind}, {ref.path}). New runs train on it.",
                          ref.to_dict())

    @tool
    def inspect_base(self) -> ToolResult:
        """Inspect the chosen base: layers x module kinds, parameters, what LoRA trains and costs."""
        report = self.service.inspect(self.state.base or None, self.state.plan.lora if self.state.plan else None)
        return ToolResult(True, render_text(report), {"report": report, "heatmap": heatmap(report)})

    # training ----------------------------------------------------------------------------------
    def train_base(self) -> str:
        """The base new runs train on: the session's pick, else the settings' default."""
        return self.state.base or self.service.settings.default_base or "default"

    def _free_name(self, plan: PlanCard) -> str:
        existing = set(self.service.adapter_names())
        name, i = plan.name, 2
        while any(f"{name}{c.suffix}" in existing for c in plan.sweep):
            name, i = f"{plan.name}-{i}", i + 1
        return name

    @tool
    def start_training(self, confirm: bool = False) -> ToolResult:
        """Queue every run of the plan's sweep on the imported data (background jobs). When the
        same plan is already queued or running on the same data it asks first: nothing is
        queued unless ``confirm`` (a double click must not train it twice)."""
        missing = [what for what, ok in (("a goal and plan (say the goal)", self.state.plan is not None),
                                         ("examples (drop a JSONL, CSV or TXT file)", self.state.data_dir))
                   if not ok]
        if missing:
            return ToolResult(False, "Training needs " + " and ".join(missing) + ".")
        plan = self.state.plan.model_copy(update={"name": self._free_name(self.state.plan)})
        try:
            job_ids = self.service.train_plan(plan, self.state.data_dir, base=self.train_base(),
                                              data_hash=self.state.data_hash, confirm=confirm)
        except SamePlanActive as exc:
            return ToolResult(False, f"{exc.message} Nothing new was queued. {SAME_PLAN_ASK}",
                              {"confirm": True, "job_ids": exc.jobs})
        names = [f"{plan.name}{c.suffix}" for c in plan.sweep][: len(job_ids)]
        self.state.job_ids += job_ids
        self.state.adapter_names += names
        runs = ", ".join(f"{n} (job {j})" for n, j in zip(names, job_ids))
        return ToolResult(True, f"Queued {counted(len(job_ids), 'run')}: {runs}.", {"job_ids": job_ids, "adapters": names})

    @tool
    def training_status(self) -> ToolResult:
        """Progress of this session's runs (all runs when the session started none)."""
        rows = ([self.service.progress(j) for j in self.state.job_ids] if self.state.job_ids
                else self.service.jobs())
        if not rows:
            return ToolResult(True, "No training runs yet.", {"jobs": []})
        lines = [describe_job(p) for p in rows]
        sweeps = finished_sweeps(rows) if self.state.job_ids else finished_sweeps(rows)[-1:]
        lines += [self.over_text(sweep, rows) for sweep in sweeps]
        if self.state.job_ids:  # said now: not said again as news
            self.state.told_jobs += [p["job_id"] for p in rows if (p.get("sweep") or p["adapter"]) in sweeps]
        return ToolResult(True, "\n".join(lines), {"jobs": rows})

    def sweep_results(self) -> list[str]:
        """For each of this session's sweeps that is over: its best adapter and why
        (:func:`backend.studio.leaderboard.sweep_summary`), e.g. "Sweep news is over.
        news-r16 is best: 29/30 vs base 13/30 few-shot — ..."."""
        if not self.state.job_ids:
            return []
        jobs = [self.service.progress(j) for j in self.state.job_ids]
        return [self.over_text(sweep, jobs) for sweep in finished_sweeps(jobs)]

    def over_text(self, sweep: str, jobs: list[dict]) -> str:
        """What the chat says when ``sweep`` is over: the best adapter and why (a sweep of
        several runs), or what a lone run scored against the base (its proof), or how it
        ended; then what to do next."""
        board = self.service.leaderboard(sweep)
        runs = [p for p in jobs if (p.get("sweep") or p["adapter"]) == sweep]
        text = sweep_summary(sweep, board)
        if len(runs) == 1 and board:
            lines = proof_lines(self.service.adapter_meta(board[0]["name"]))
            if lines:  # a markdown list: a long warning stays readable
                text = f"{board[0]['name']} finished training:\n" + "\n".join(f"- {line}" for line in lines) + "\n\n"
        elif len(runs) == 1:
            run = runs[0]
            text = f"{run['adapter']} (job {run['job_id']}) ended {run['status']}" + (
                f": {run['error'].splitlines()[0].rstrip('.')}" if run.get("error") else "") + "."
        text = text if text.endswith("\n") else text + " "
        if not board:
            return f"{text}Next: fix what stopped it (the **Train** tab has the reason), then say *go* again."
        best = next((r["name"] for r in board if r["recommended"]), board[0]["name"])
        return (f"{text}Next: *compare* to see {best} beside the base, *mark {best} success* (or *fail*), "
                "or try another run (say *2 runs*, then *go*).")

    def sweep_news(self) -> list[str]:
        """What the assistant has not said yet about this session's runs, once each: a run
        served while its proof still runs (:func:`served_text`), and each sweep that is over;
        nothing (and no call to the service) when every run has been told.
        Never raises: news must not break a reply."""
        untold = [j for j in self.state.job_ids if j not in self.state.told_jobs]
        if not untold:
            return []
        try:
            jobs = [self.service.progress(j) for j in self.state.job_ids]
            served = [p for p in jobs if p.get("served") and p["job_id"] not in self.state.told_served]
            news = [served_text(p) for p in served
                    if p.get("phase") == "scoring" and p["job_id"] not in self.state.told_jobs]
            self.state.told_served += [p["job_id"] for p in served]
            for sweep in finished_sweeps(jobs):
                runs = [p["job_id"] for p in jobs if (p.get("sweep") or p["adapter"]) == sweep]
                if set(runs) <= set(self.state.told_jobs):
                    continue
                news.append(self.over_text(sweep, jobs))
                self.state.told_jobs += runs
            return news
        except Exception as exc:
            logger.warning("sweep news failed: %s", exc)
            return []

    @tool
    def cancel_training(self, job_id: int | None = None, every: bool = False) -> ToolResult:
        """Cancel one job; without an id, the one queued or running job (of this session, else any),
        every one with ``every``, else it asks which."""
        if job_id is not None:
            targets = [int(job_id)]
        else:
            mine = [self.service.progress(j) for j in self.state.job_ids]
            active = [p for p in (mine or self.service.jobs()) if p.get("status") in ACTIVE]
            targets = [p["job_id"] for p in active]
            if len(targets) > 1 and not every:
                which = "; ".join(f"job {p['job_id']} {p['adapter']} ({p['status']})" for p in active)
                return ToolResult(False, f"Several runs can be cancelled: {which}. Which one? Say e.g. "
                                         f"*cancel {targets[0]}*, or *cancel all*.", {"job_ids": targets})
        if not targets:
            return ToolResult(False, "There is no queued or running job to cancel.")
        answers = {j: self.service.cancel(j) for j in targets}
        said = " ".join(describe_cancel(j, answer) for j, answer in answers.items())
        return ToolResult(True, f"{said} Finished adapters are untouched.",
                          {"job_ids": targets, "answers": answers})

    # serving, comparing, rating ------------------------------------------------------------------
    @tool
    def compare(self, prompt: str | None = None, adapters: list[str] | None = None, blind: bool = False) -> ToolResult:
        """Answer one prompt (default: the plan's first probe) with the base and adapters side by side."""
        state = self.state
        prompt = (prompt or "").strip() or (state.plan.probe_prompts[0] if state.plan else "")
        if not prompt:
            return ToolResult(False, "There is no prompt to compare on: give one, or set a goal first.")
        served = self.service.models()
        if adapters and not set(adapters) <= set(served):  # finished, not hot-loaded yet: load them now
            self.service.sync_endpoint()
            served = self.service.models()
        base_name, loaded = served[0], served[1:]
        if adapters:
            chosen = list(adapters)
        else:
            mine = [n for n in state.adapter_names if n in loaded]
            chosen = mine or loaded
        if not chosen:
            return ToolResult(False, "No adapter is loaded in the serving endpoint yet, "
                                     "so there is nothing to compare the base with.")
        system = state.plan.system_prompt if state.plan else None
        temperature = temperature_of(state, "compare", self.service.adapters_task(chosen))
        comparison = self.service.compare(prompt, [base_name, *chosen], system_prompt=system, blind=blind,
                                          temperature=temperature)
        state.comparison, state.rated, state.served_base = comparison, {}, base_name
        lines = [f"Compared on: {prompt}", f"({comparison.settings_text})"]
        for answer in comparison.answers:
            label = answer.label if comparison.blind else ("Base" if answer.model == base_name else answer.model)
            lines.append(f"- **{label}**: {answer.text.strip() or '(empty answer)'}")
        return ToolResult(True, "\n".join(lines), comparison.to_dict())

    def _find_answer(self, ref: str):
        c = self.state.comparison
        ref_l = re.sub(r"^answer\s+", "", ref.strip().lower())
        for i, a in enumerate(c.answers):
            keys = {a.model.lower(), a.label.lower(), chr(97 + i), str(i + 1), f"answer {chr(97 + i)}"}
            if ref_l in keys:
                return a
        if ref_l in ("base", "베이스", "기본"):
            return next((a for a in c.answers if a.model == self.state.served_base), None)
        return None

    def display_name(self, model: str) -> str:
        """'Base' for the endpoint's base model, else the adapter's name."""
        return "Base" if model == self.state.served_base else model

    @tool
    def rate(self, answer: str, score: int = 0, best: bool = False) -> ToolResult:
        """Rate one answer of the last comparison: score +1 (👍) / -1 (👎), or best=True."""
        c = self.state.comparison
        if c is None:
            return ToolResult(False, "There is no comparison to rate yet: compare first.")
        target = self._find_answer(str(answer))
        if target is None:
            labels = ", ".join(a.label for a in c.answers)
            return ToolResult(False, f"{answer!r} is not one of the answers ({labels}).")
        self.service.rate(c, target.model, score=int(score), best=bool(best))
        self.state.rated[target.model] = {"score": int(score), "best": bool(best)}
        what = "picked as best" if best else {1: "rated 👍", -1: "rated 👎"}.get(int(score), "rated neutral")
        name = self.display_name
        if not c.blind:
            shown = name(target.model)
        else:
            shown = f"{target.label} ({name(target.model)})" if self.state.revealed else target.label
        text = f"{shown} {what}; the rating is stored with the prompt and the answer."
        if c.blind and self.state.revealed:
            text += " Revealed: " + ", ".join(f"{a.label} = {name(a.model)}" for a in c.answers) + "."
        return ToolResult(True, text, {"model": target.model})

    @tool
    def tallies(self) -> ToolResult:
        """Per-adapter rating tallies: ratings, 👍/👎, win rate against the base."""
        data = self.service.tallies()
        if not data:
            return ToolResult(True, "No ratings yet.", {"tallies": {}})
        return ToolResult(True, "\n".join(describe_tally(t) for t in data.values()), {"tallies": data})

    @tool
    def mark(self, verdict: str, adapter: str | None = None) -> ToolResult:
        """Mark an adapter 'success' or 'fail' (default: the adapter of the last comparison or run)."""
        name = adapter or self._current_adapter()
        if not name:
            return ToolResult(False, "Which adapter? None has been trained or compared yet.")
        row = self.service.mark(name, verdict)
        tally = row.get("ratings")
        text = f"Marked {name} as {verdict}."
        if tally:
            text += f" Its tallies: {describe_tally(tally)}"
        return ToolResult(True, text, row)

    def _current_adapter(self) -> str | None:
        c = self.state.comparison
        if c is not None:
            names = set(self.service.adapter_names())
            compared = [a.model for a in c.answers if a.model in names]
            if len(compared) == 1:
                return compared[0]
        if self.state.chat_model != BASE_CHOICE:
            return self.state.chat_model
        return self.state.adapter_names[-1] if self.state.adapter_names else None

    @tool
    def use_base(self) -> ToolResult:
        """Switch the playground chat to the untouched base model (in a fresh conversation)."""
        self.state.chat_model = BASE_CHOICE
        return ToolResult(True, "The playground chat now answers with the base model, in a fresh conversation.")

    @tool
    def use_adapter(self, name: str) -> ToolResult:
        """Switch the playground chat to an adapter (in a fresh conversation)."""
        row = self.service.adapter(name.strip())
        if row["status"] != "done":
            return ToolResult(False, f"Adapter {name} is {row['status']}, not ready to chat with.")
        self.state.chat_model = row["name"]
        return ToolResult(True, f"The playground chat now answers with {row['name']}, in a fresh conversation.")

    @tool
    def list_adapters(self) -> ToolResult:
        """Every adapter with its status, goal, verdict and ratings."""
        rows = self.service.adapters()
        if not rows:
            return ToolResult(True, "No adapters yet.", {"adapters": []})
        lines = [f"- {r['name']}: {r['status']}, goal {r['goal']!r}, verdict {r['verdict'] or 'none'}" for r in rows]
        return ToolResult(True, "\n".join(lines), {"adapters": rows})

    @tool
    def export(self, adapter: str, dest: str, merged: bool = False) -> ToolResult:
        """Export an adapter as a PEFT folder (or a merged model) into an empty folder inside
        the home or a folder of TUNELAB_EXPORT_ROOTS (the page and the assistant write nowhere else)."""
        path = self.service.export(adapter, self.service.settings.export_destination(dest), merged=merged)
        kind = "merged model" if merged else "PEFT adapter folder"
        return ToolResult(True, f"Exported {adapter} as a {kind} to {path}.", {"path": str(path)})

    # for the agent -------------------------------------------------------------------------------
    def functions(self) -> list[Callable[..., ToolResult]]:
        return [self.set_goal, self.show_plan, self.add_examples, self.choose_columns, self.pick_base, self.inspect_base,
                self.start_training, self.training_status, self.cancel_training, self.compare, self.rate,
                self.tallies, self.mark, self.use_base, self.use_adapter, self.list_adapters, self.export,
                *self.arena.functions()]
