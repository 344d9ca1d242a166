"""The assistant's tools for the arena and the preference round (issue 18): the ranking from
all votes, the comparison worth voting on next, a rating given outside a comparison, the
ratings as preference data, and a round trained from them.

Each one calls the same :mod:`backend.studio.rounds` functions as the page's arena and
`tunelab ratings`, and returns a :class:`~backend.studio.session.ToolResult` from what they
returned. :class:`ArenaTools` is a part of :class:`backend.studio.tools.AssistantTools`
(``tools.arena``) and shares its service, state and log, so a round queued here is one of the
session's runs and the agent's footer lists these tools with the others. A tool's docstring
is its description for the agent's model.
"""

from __future__ import annotations

from typing import Callable

from backend.errors import AdapterNotFound
from backend.studio import rounds
from backend.studio.ratings import BASE
from backend.studio.session import ToolResult, tool


class ArenaTools:
    """The arena's tools, bound to one service and one session's state; ``compare`` is the
    session's compare tool (a blind comparison runs through it, as on the page)."""

    def __init__(self, service, state, *, log: list, compare: Callable[..., ToolResult]):
        self.service, self.state, self.log, self._compare = service, state, log, compare

    @tool
    def ranking(self) -> ToolResult:
        """Rank the base and every finished adapter from all stored votes (Bradley–Terry): each
        model's score with its 95% interval, votes, won/lost and how likely the leader beats it,
        then the verdict (who leads, and whether the winner is clear enough to stop voting).
        Use it for "which is best", "ranking", "leaderboard", "순위"."""
        result = rounds.table(self.service)
        return ToolResult(True, rounds.ranking_reply(self.service), result)

    @tool
    def next_comparison(self, run: bool = True) -> ToolResult:
        """The comparison whose votes would most shrink the doubt about which model is best: the
        leader and the challenger it is least surely ahead of, on the probe or held-out prompt
        they were rated on least. With ``run`` (the default) it is shown now, blind (answers
        labelled A, B ...): then ask the person to judge each answer and record it with ``rate``
        (👍 on one and 👎 on another is a game in the arena). Says so when the winner is already
        clear."""
        chosen = rounds.next_comparison(self.service, self.state)
        if chosen is None:
            return ToolResult(False, "Nothing to compare yet: the arena needs a finished adapter and a prompt "
                                     "(set a goal for its probe prompts, or import data with held-out rows).")
        said = f"Next: {' vs '.join(chosen['pair'])} on {chosen['prompt']!r}: {chosen['why']}."
        if not run:
            return ToolResult(True, said, chosen)
        shown = self._compare(chosen["prompt"], chosen["adapters"], blind=True)
        if not shown.ok:
            return ToolResult(False, f"{said} The comparison failed: {shown.text}", chosen)
        return ToolResult(True, f"{said}\n{shown.text}\nRate the answers with `rate` (e.g. A 👍 and B 👎).",
                          {**chosen, "comparison": shown.data})

    @tool
    def rate_answer(self, model: str, prompt: str, output: str, score: str) -> ToolResult:
        """Record one rating of an answer given outside a comparison (e.g. in the playground chat):
        ``model`` is the adapter's name or "base", ``prompt`` what was asked, ``output`` the answer
        it gave, ``score`` "up" (👍) or "down" (👎). With other ratings on the same prompt it makes
        preference pairs (one 👍 and one 👎), and it counts in the tallies; the arena ranks from
        answers shown together, so for an answer of the last comparison use ``rate`` instead."""
        given = model.strip()
        model = BASE if given.lower() in ("base", "the base", "base model") else given
        row = rounds.add_rating(self.service, model, prompt, output, score)
        thumb = "👍" if row["score"] > 0 else "👎"
        pairs = len(rounds.pairs(self.service))
        return ToolResult(True, f"Stored {thumb} for {model}'s answer to {prompt.strip()!r} (rating {row['id']}). "
                                f"The stored ratings now make {pairs} preference pair{'' if pairs == 1 else 's'}.",
                          {**row, "pairs": pairs})

    @tool
    def export_ratings(self, dest: str | None = None) -> ToolResult:
        """Write the stored ratings as preference data in TRL's format (JSON lines with prompt,
        chosen, rejected): a pair wherever one prompt has an answer voted up and another voted
        down or beaten as Best. ``dest``: a file inside the home (or TUNELAB_EXPORT_ROOTS);
        default a new file under the home's uploads. Says how many pairs it wrote."""
        target = self.service.settings.export_destination(dest) if dest and dest.strip() else None
        written = rounds.export_preference(self.service, target)
        text = f"Wrote {written['pairs']} preference pair{'' if written['pairs'] == 1 else 's'} " \
               f"(from {len(written['rating_ids'])} ratings) to {written['path']}."
        if not written["pairs"]:
            text += " No prompt has both an answer voted up and one voted down yet: the file is empty."
        return ToolResult(True, text, written)

    @tool
    def train_from_ratings(self, adapter: str | None = None, name: str | None = None,
                           method: str = "auto") -> ToolResult:
        """Train a preference round from the person's ratings ("train from my ratings",
        "내 평가로 다시 학습해"): it continues from ``adapter`` (default: the arena's best-rated
        adapter) as a new adapter ``name`` (default: ADAPTER-dpo, or ADAPTER-kto) on the stored
        votes: DPO on the pairs they make, or KTO on single 👍/👎 votes where there are too few
        pairs; the base stays frozen. ``method``: "auto" (that choice), or "dpo" / "kto" when the
        person asks for one. With too few votes nothing is queued, and the result says
        how many more votes are needed."""
        done = self.service.adapter_names(status="done")
        given = (adapter or "").strip()
        if given and given not in done:  # never a round from another adapter than the one asked for
            raise AdapterNotFound(given, done)
        parent = rounds.round_parent(self.service, given)
        if parent is None:
            return ToolResult(False, "There is no finished adapter to improve yet: train one, compare it and "
                                     "rate the answers.")
        method = (method or "auto").strip().lower()
        name = (name or "").strip() or (rounds.round_name(self.service, parent) if method == "auto"
                                         else rounds.free_name(self.service, parent, method))
        started, said = rounds.train_from_ratings(self.service, parent, name, method=method)
        if not started:
            return ToolResult(False, said)
        job = max(j.id for j in self.service.store.list_jobs() if j.adapter == name)
        self.state.job_ids.append(job)  # one of this session's runs: its status and its news
        self.state.adapter_names.append(name)
        return ToolResult(True, said, {"job_id": job, "adapter": name, "parent": parent})

    def functions(self) -> list[Callable[..., ToolResult]]:
        return [self.ranking, self.next_comparison, self.rate_answer, self.export_ratings, self.train_from_ratings]

