"""Quality along a default run: after how many steps does an adapter stop getting better on
inputs it never saw?

For each of TuneLab's own tasks (``bench/tasks.py``) it imports the training file and takes
the configuration TuneLab chooses with no knob set, as ``bench/quality.py`` does, then
trains it to the step ceiling (early stopping off, so the whole trajectory is seen) while a
callback copies the LoRA weights every ``--every`` steps, where the held-out loss is
evaluated too. Each copy is then put on the base and scored on the task's unseen rows with
plain peft, greedy: exact match (parsed JSON for extraction), or for the judged tasks
(autumn, listings) the bench's judge. Every share has its row count and a 95% Wilson
interval; training seconds at a step are the run's seconds per step times the step.
``--learning-rate`` trains at another rate than the default's, ``--neftune`` at one or
more NEFTune noise levels (0: none) instead of the default's, and ``--seed`` with one or
more seeds (the LoRA's initialization and the shuffling), each task once per level and seed
in the same run, to compare them by quality per training second.

The copy at the step the run kept as best must answer exactly as the adapter the run
wrote (checked: the copies are the weights that were trained, not a reconstruction).
Writes ``bench/results/quality-curve.json`` with the CPU and its flags.

    python bench/quality_curve.py [--tasks triage ... listings] [--every 10] [--learning-rate 5e-4]
                                  [--neftune 5 0] [--seed 1 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import quality  # noqa: E402  (bench/quality.py: the same import, spec and scoring helpers)
import tasks  # noqa: E402
from bench.machine import cpu, write_results  # noqa: E402


def snapshot_callback(every: int, snapshots: dict):
    """A TrainerCallback that copies the LoRA weights (fp32, on the CPU) every ``every`` steps
    and at the last step into ``snapshots[step]``."""
    from peft import get_peft_model_state_dict
    from transformers import TrainerCallback

    class Snapshots(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % every == 0 or state.global_step >= state.max_steps:
                snapshots[state.global_step] = {k: v.detach().float().cpu().clone()
                                                for k, v in get_peft_model_state_dict(model).items()}

    return Snapshots()


def adapter_answers(task: dict, peft_model, tokenizer, system_prompt: str | None) -> list[str]:
    from backend.proof.on_model import hf_generator

    generate = hf_generator(peft_model, tokenizer, use_adapter=True, max_new_tokens=quality.answer_tokens(task))
    return [a[0] for a in generate([r["messages"][:-1] for r in quality.unseen_rows(task, system_prompt)])]


def judged(task: dict, answers: list[str]) -> dict:
    """The adapter's unseen score as bench/quality.py counts it (a judge's "ok" for a judged task)."""
    from backend.proof.intervals import scored

    if task["kind"] == "style":
        return scored([j["ok"] for j in quality.judgements(task, answers)])
    return scored(quality.matches(task, answers))


def run_task(name: str, service, base: str, every: int, learning_rate: float | None = None,
             neftune: float | None = None, seed: int | None = None) -> dict:
    import torch
    from peft import PeftModel, set_peft_model_state_dict

    from backend.bases.load import load_model, load_tokenizer
    from backend.training.run import train_adapter

    work = Path(tempfile.mkdtemp(prefix=f"quality-curve-{name}-"))
    task, imported, spec, plan = quality.import_task(name, service, base, work)
    # to the ceiling, the held-out loss at every copy (the run itself evaluates about once an epoch)
    train = {"early_stopping": False, "eval_steps": every, **({"learning_rate": learning_rate} if learning_rate else {}),
             **({"neftune_noise_alpha": neftune or None} if neftune is not None else {}),
             **({"seed": seed} if seed is not None else {})}
    spec = spec.model_copy(update={"train": spec.train.model_copy(update=train)})
    ref = service.resolve_base(base)
    snapshots: dict[int, dict] = {}
    meta = train_adapter(spec, base_ref=ref, train_file=imported.folder / "train.jsonl",
                         eval_file=imported.folder / "eval.jsonl", out_dir=work / "adapters" / name,
                         work_dir=work / "run", callbacks=[snapshot_callback(every, snapshots)])
    metrics = meta["metrics"]
    per_step = metrics["train_seconds"] / max(1, metrics["steps"])
    best = (metrics.get("stopping") or {}).get("best_step")

    tokenizer = load_tokenizer(ref, plain_template=True)
    model = load_model(ref, dtype=torch.float32).eval()
    peft_model = PeftModel.from_pretrained(model, str(work / "adapters" / name)).eval()
    system = spec.train.system_prompt
    written = adapter_answers(task, peft_model, tokenizer, system)
    curve = []
    for step in sorted(snapshots):
        set_peft_model_state_dict(peft_model, snapshots[step])
        answers = adapter_answers(task, peft_model, tokenizer, system)
        point = {"step": step, "train_seconds": round(step * per_step, 1), "unseen": judged(task, answers)}
        if step == best:
            point["same_answers_as_the_written_adapter"] = answers == written
        curve.append(point)
        print(f"  {name} step {step}: {point['unseen']['correct']}/{point['unseen']['total']}", flush=True)
    evals = [{"step": h["step"], "eval_loss": h["eval_loss"]} for h in meta.get("loss_history", [])
             if h.get("eval_loss") is not None]
    return {"task": name, "kind": plan.kind, "train_rows": len(imported.report.train),
            "held_out_rows": len(imported.report.eval), "unseen_rows": len(task["unseen"]),
            "config": {"r": spec.lora.r, "learning_rate": spec.train.learning_rate,
                       "batch_size": spec.train.batch_size, "epochs_ceiling": spec.train.epochs,
                       "neftune_noise_alpha": spec.train.neftune_noise_alpha or 0, "seed": spec.train.seed,
                       "settled_loss": spec.train.settled_loss, "patience": spec.train.patience},
            "steps": metrics["steps"], "train_seconds": round(metrics["train_seconds"], 1),
            "seconds_per_step": round(per_step, 3), "best_step_by_held_out_loss": best,
            "held_out_loss": evals, "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(tasks.TASKS), choices=tasks.TASKS)
    parser.add_argument("--base", default="default")
    parser.add_argument("--every", type=int, default=10, help="copy the weights every N steps")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="train at this rate instead of the default's (to compare rates along the curve)")
    parser.add_argument("--neftune", type=float, nargs="+", default=[None], metavar="ALPHA",
                        help="train each task once per NEFTune noise level (0: none) instead of the default's")
    parser.add_argument("--seed", type=int, nargs="+", default=[None],
                        help="train each task once per seed (the LoRA's initialization, the shuffling) "
                             "instead of the default's")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality-curve.json")
    args = parser.parse_args()

    service = quality.fresh_service(args.base, "tunelab-quality-curve-")
    results = []
    for name in args.tasks:
        for neftune in args.neftune:
            for seed in args.seed:
                print(f"== {name}" + (f" (NEFTune {neftune:g})" if neftune is not None else "")
                      + (f" (seed {seed})" if seed is not None else ""), flush=True)
                results.append(run_task(name, service, args.base, args.every, args.learning_rate, neftune, seed))
        write_results(args.out, {"benchmark": "quality-curve", "machine": cpu(), "base": args.base,
                                 "date": time.strftime("%Y-%m-%d"), "every": args.every, "tasks": results},
                      echo=False)


if __name__ == "__main__":
    main()
