"""Stop rules replayed on recorded runs: what would another rule have cost and kept?

``bench/quality_curve.py`` trains each task to its step ceiling and records, at the same
steps, the held-out loss and the unseen rows' score. This replays TuneLab's own early stop
(:class:`backend.training.early_stop.KeepBest`, unchanged) over those held-out losses for
each rule asked (``--min-improvement``: the relative fall an evaluation must show to reset
the patience) and reports, per task and rule: the step the run would stop at, the step
whose weights it would keep, the unseen score at that step (with its 95% interval) and the
training seconds spent. Nothing is trained: a rule costs seconds to judge, and it is judged
on every recorded task at once, not tuned to one.

The recorded runs evaluate every ``every`` steps of their own (10 for most tasks, 15 or 30
for listings), the product about once an epoch, so patience here counts those evaluations.
The settled loss is the one the product's plan gives each task's data (imported again).

    python bench/stop_replay.py [--curves bench/results/quality-curve.json] [--min-improvement 0.005 0.02 0.05]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from backend.training.early_stop import KeepBest  # noqa: E402
from bench.machine import write_results  # noqa: E402


def replay(held_out_loss: list[dict], *, patience: int, min_improvement: float, settled_loss: float | None) -> dict:
    """KeepBest fed the recorded evaluations in order: the step it stops at (the last one
    when nothing stops it), the step whose weights it keeps, and why it stopped."""
    keep = KeepBest(patience=patience, min_improvement=min_improvement, settled_loss=settled_loss)
    control = SimpleNamespace(should_training_stop=False)
    stop = None
    for point in held_out_loss:
        keep.on_evaluate(None, SimpleNamespace(global_step=point["step"]), control,
                         metrics={"eval_loss": point["eval_loss"]})
        if control.should_training_stop:
            stop = point["step"]
            break
    return {"stop_step": stop if stop is not None else held_out_loss[-1]["step"], "kept_step": keep.best_step,
            "stopped_because": keep.reason}


def judge_rule(task: dict, *, patience: int, min_improvement: float, settled_loss: float | None) -> dict:
    """One recorded task under one rule: the replay, and the unseen score and training
    seconds that follow from it."""
    from backend.proof.intervals import scored

    result = replay(task["held_out_loss"], patience=patience, min_improvement=min_improvement,
                    settled_loss=settled_loss)
    # a run the time budget cut short has its last evaluation but no copy there: the copy before it
    scored_at = max(point["step"] for point in task["curve"] if point["step"] <= result["kept_step"])
    unseen = next(point["unseen"] for point in task["curve"] if point["step"] == scored_at)
    result["unseen_scored_at"] = scored_at
    result["unseen"] = scored([True] * unseen["correct"] + [False] * (unseen["total"] - unseen["correct"]))
    result["train_seconds"] = round(result["stop_step"] * task["seconds_per_step"], 1)
    return result


def settled_losses(names: set[str], base: str) -> dict[str, float | None]:
    """The settled loss the product's plan gives each task's training file."""
    import quality

    service = quality.fresh_service(base, "tunelab-stop-replay-")
    out = {}
    for name in sorted(names):
        _, _, spec, _ = quality.import_task(name, service, base, Path(tempfile.mkdtemp()))
        out[name] = spec.train.settled_loss
    return out


def main() -> None:
    from backend.training.defaults import PATIENCE

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--curves", type=Path, default=ROOT / "bench" / "results" / "quality-curve.json")
    parser.add_argument("--min-improvement", type=float, nargs="+", default=[0.005, 0.02, 0.05])
    parser.add_argument("--patience", type=int, default=PATIENCE)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stop-replay.json")
    args = parser.parse_args()

    curves = json.loads(args.curves.read_text())
    runs = [t for t in curves["tasks"] if len(t["held_out_loss"]) >= 3]
    settled = settled_losses({t["task"] for t in runs}, curves.get("base", "default"))
    results = []
    for task in runs:
        row = {"task": task["task"], "run": task.get("run", curves.get("date")), "config": task["config"],
               "every": task.get("every", curves.get("every")), "settled_loss": settled[task["task"]],
               "ceiling": {"step": task["curve"][-1]["step"], "unseen": task["curve"][-1]["unseen"],
                           "train_seconds": task["train_seconds"]},
               "rules": {}}
        for m in args.min_improvement:
            row["rules"][f"{m:g}"] = judge_rule(task, patience=args.patience, min_improvement=m,
                                                settled_loss=settled[task["task"]])
        results.append(row)
        print(task["task"], task.get("run", ""), {k: (v["stop_step"], v["kept_step"], v["unseen"]["correct"])
                                                  for k, v in row["rules"].items()}, flush=True)
    write_results(args.out, {"benchmark": "stop-replay", "curves": str(args.curves.relative_to(ROOT)),
                             "machine_of_the_curves": curves.get("machine"), "date": time.strftime("%Y-%m-%d"),
                             "patience": args.patience, "tasks": results}, echo=False)


if __name__ == "__main__":
    main()
