"""``tunelab ratings``: the arena's leaderboard, a rating from the command line, and the
ratings exported as preference pairs or single votes (TRL's formats). Registered in
:mod:`backend.cli`, whose one error handler turns a TuneLab error into ``Error: ...`` and exit
code 2. The round itself is ``tunelab train --method dpo|kto|auto --from NAME``;
docs/ratings.md says more.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from backend.settings import Settings
from backend.studio import rounds
from backend.studio.ratings import single_votes_needed
from backend.studio.service import Service
from backend.words import counted

console = Console()
err = Console(stderr=True)

ratings_app = typer.Typer(help="Ratings: the arena's ranking, adding ratings, preference pairs and votes.",
                          no_args_is_help=True)


def _service() -> Service:
    return Service(Settings())


@ratings_app.command("leaderboard")
def leaderboard(as_json: bool = typer.Option(False, "--json", help="Print the table as JSON.")) -> None:
    """Every model (the base and each adapter) ranked by Bradley–Terry from all votes, with 95% intervals."""
    result = rounds.table(_service())
    if as_json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    grid = Table("rank", "model", "score", "95% CI", "votes", "W/L", "leader wins", "P(best)")
    for row in result["rows"]:
        lo, hi = row["ci95"]
        versus = "—" if row["p_leader_wins"] is None else f"{row['p_leader_wins']:.0%}"
        grid.add_row(str(row["rank"]), row["name"], f"{row['score']:+.2f}", f"{lo:+.2f} to {hi:+.2f}",
                     str(row["votes"]), f"{row['wins']}/{row['losses']}", versus, f"{row['p_best']:.0%}")
    console.print(grid)
    console.print(result["summary"], highlight=False)


@ratings_app.command("add")
def add(name: str = typer.Argument(..., help="The adapter rated, or 'base'."),
        prompt: str = typer.Option(..., "--prompt", help="The prompt that was asked."),
        output: str = typer.Option(..., "--output", help="The answer the model gave."),
        score: str = typer.Option(..., "--score", help="up (👍) or down (👎)."),
        best: bool = typer.Option(False, "--best", help="Also mark it the best answer of its comparison."),
        comparison: Optional[str] = typer.Option(None, "--comparison",
                                                 help="Ratings with the same id were shown together (the arena "
                                                 "counts 👍 against 👎 within one); default: a new one."),
        ) -> None:
    """Record one rating, as the page's 👍/👎 does."""
    stored = rounds.add_rating(_service(), name, prompt, output, score, best=best, comparison=comparison)
    print(json.dumps(stored))


@ratings_app.command("export")
def export(fmt: str = typer.Option("preference", "--format", help="preference (TRL prompt/chosen/rejected pairs, "
                                   "for DPO) or unpaired (TRL prompt/completion/label, one row per 👍/👎, for KTO)."),
           out: Optional[Path] = typer.Option(None, "--out", help="File to write; default: a new file in the "
                                              "home's datasets/uploads/preference/."),
           ) -> None:
    """Write the ratings as preference pairs (wherever one prompt has an answer voted up, or best,
    and another voted down, or beaten by the best) or as single votes (every 👍/👎; Best is 👍)."""
    service = _service()
    if fmt == "unpaired":
        written = rounds.export_unpaired(service, out)
        err.print(f"{counted(written['votes'], 'vote')} ({written['up']} 👍, {written['down']} 👎) from "
                  f"{counted(len(written['rating_ids']), 'rating')} -> {written['path']}", highlight=False)
        if not rounds.enough_votes(written["up"], written["down"]):
            err.print(single_votes_needed(written["up"], written["down"]), highlight=False)
        print(written["path"])
        return
    if fmt != "preference":
        raise typer.BadParameter(f"format {fmt!r} is not known; use --format preference or --format unpaired.")
    written = rounds.export_preference(service, out)
    err.print(f"{counted(written['pairs'], 'pair')} from {counted(len(written['rating_ids']), 'rating')} -> {written['path']}",
              highlight=False)
    if written["pairs"] < rounds.MIN_PAIRS:
        err.print(rounds.votes_needed(written["pairs"]), highlight=False)
    print(written["path"])
