"""What every panel shares: the context they are built with, and the error edge.

Panels never hold state of their own beyond Gradio components: per-session state is
the :class:`backend.studio.session.SessionState` in ``ctx.state`` (a ``gr.State``);
everything shared lives in the backend, reached through ``ctx.service()``.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr

from backend.errors import TuneLabError
from backend.studio.leaderboard import best_line, by_sweep, verdict_words

log = logging.getLogger("tunelab.ui")

BASE_LABEL = "Base"  # what the page calls the untouched base model, everywhere


@dataclass
class Ctx:
    """Handed to every panel's ``build``.

    ``refreshers`` are (function of the session state -> list of updates, outputs):
    after anything that may change the session or the backend (an assistant turn, a
    finished job, a page load) :meth:`refresh_after` runs all of them in one call.
    """

    service: Callable[[], Any]
    state: gr.State
    chat: Any = None  # the assistant's Chatbot (set by assistant_panel, built first): panels may add to it
    refreshers: list[tuple[Callable, list]] = field(default_factory=list)
    _triggers: list = field(default_factory=list)

    def on_refresh(self, fn: Callable, outputs: list) -> None:
        self.refreshers.append((fn, outputs))

    def refresh_outputs(self) -> list:
        return [o for _, outputs in self.refreshers for o in outputs]

    def refresh_all(self, state) -> list:
        values: list = []
        for fn, outputs in self.refreshers:
            try:
                part = list(fn(state))
            except Exception as exc:  # one panel failing must not blank the others
                log.warning("refresh %s failed: %s", getattr(fn, "__name__", fn), exc)
                part = [gr.skip()] * len(outputs)
            values += part
        return values

    def refresh_after(self, event):
        """Refresh every panel after ``event`` (wired by :meth:`wire`, once all panels exist)."""
        self._triggers.append(event)
        return event

    def wire(self) -> None:
        """Chain the refresh after every recorded event; call once, after the last panel."""
        outputs = self.refresh_outputs()
        for event in self._triggers:
            event.then(edge(self.refresh_all), [self.state], outputs, show_progress="hidden")
        self._triggers.clear()


def _message(exc: Exception) -> str:
    if isinstance(exc, TuneLabError):
        return str(exc)
    return f"Something went wrong ({type(exc).__name__}: {exc}). The details are in the app's log."


def edge(fn: Callable) -> Callable:
    """Turn TuneLab's typed errors (and anything unexpected) into a readable gr.Error.

    The page never shows a traceback; unexpected errors are logged with theirs.
    """
    def page_error(exc: Exception) -> gr.Error:
        if not isinstance(exc, TuneLabError):
            log.exception("handler %s failed", fn.__name__)
        return gr.Error(_message(exc))

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                raise page_error(exc) from None

        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise page_error(exc) from None

    return call


def message_text(message: dict) -> str:
    """The text of a Chatbot message, whether its content is a string or Gradio 6's parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if isinstance(content, dict):
        return content.get("text", "")
    return ""


def esc(text: Any) -> str:
    return html.escape(str(text))


def pct(value) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def short_number(value: float) -> str:
    """12345 -> '12.3k', 0.00123 -> '0.00123': short enough for a heatmap cell."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.3g}" if isinstance(value, float) else f"{value:g}"


def heatmap_html(data: dict, title: str = "parameters per layer × module", *, elem_id: str = "base-heatmap-table",
                 fmt: Callable[[Any], str] = short_number) -> str:
    """A small HTML table heatmap (no plotting library needed): darker = more.

    ``data`` is ``{"layers", "modules", "values"}`` (the inspector's, the equalizer
    grid's or the proof's ΔW heatmap); ``None`` cells are shown as '·'.
    """
    values = [v for row in data["values"] for v in row if v is not None]
    top = max(values) if values else 1
    head = "".join(f"<th title='{esc(m)}'>{esc(m.split('.')[-1])}</th>" for m in data["modules"])
    rows = []
    for layer, row in zip(data["layers"], data["values"]):
        cells = []
        for module, value in zip(data["modules"], row):
            if value is None:
                cells.append("<td class='tl-none'>·</td>")
                continue
            alpha = 0.12 + 0.88 * (value / top if top else 0)
            cells.append(f"<td style='background: rgba(234,88,12,{alpha:.2f})' "
                         f"title='layer {esc(layer)} · {esc(module)}: {value:,}'>{esc(fmt(value))}</td>")
        rows.append(f"<tr><th>{esc(layer)}</th>{''.join(cells)}</tr>")
    return (f"<div class='tl-heatmap' id='{esc(elem_id)}'><div class='tl-caption'>{esc(title)}</div>"
            f"<table><thead><tr><th>layer</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def leaderboard_html(rows: list[dict], *, elem_id: str, title: str = "",
                     empty: str = "No finished adapters to rank yet.", show_sweep: bool = False,
                     badges: dict | None = None) -> str:
    """The leaderboard (rows of ``service.leaderboard()``) as a table: adapter, held-out score,
    vs base, train time, size, the proof's suggestion; ★ marks each sweep's recommended
    adapter, and a line under the table says why. ``show_sweep`` adds the sweep's column,
    ``badges`` (``service.badges()``) a last one with each adapter's verdict badge."""
    caption = f"<div class='tl-caption'>{esc(title)}</div>" if title else ""
    if not rows:
        return f"<div class='tl-board tl-empty' id='{esc(elem_id)}'>{caption}{esc(empty)}</div>"
    heads = ["", "adapter"] + (["sweep"] if show_sweep else []) + ["held-out score", "vs base", "train", "size",
                                                                   "proof says"]
    heads += ["verdict"] if badges is not None else []
    body = []
    for r in rows:
        cells = ["★" if r["recommended"] else "", r["name"]] + ([r["sweep"]] if show_sweep else []) + [
            r["score_text"], r["base_text"] or "—", r["train_text"], r["size_text"], verdict_words(r["verdict"])]
        cells += [badges.get(r["name"], "unmarked")] if badges is not None else []
        body.append(f"<tr class='{'tl-best' if r['recommended'] else ''}' data-adapter='{esc(r['name'])}' "
                    f"data-recommended='{str(r['recommended']).lower()}'>"
                    + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    why = [f"<li>★ {esc(line)}</li>" for group in by_sweep(rows).values() if (line := best_line(group))]
    return (f"<div class='tl-board' id='{esc(elem_id)}'>{caption}<table><thead><tr>"
            + "".join(f"<th>{esc(h)}</th>" for h in heads) + f"</tr></thead><tbody>{''.join(body)}</tbody></table>"
            + (f"<ul class='tl-why'>{''.join(why)}</ul>" if why else "") + "</div>")


SERIES_COLORS = {"train": "#ea580c", "eval": "#2563eb"}


def loss_points(history: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Train and eval loss as (step, loss) points, from a progress/tunelab.json history."""
    points: dict[str, list[tuple[int, float]]] = {"train": [], "eval": []}
    for point in history or []:
        if point.get("loss") is not None:
            points["train"].append((int(point["step"]), float(point["loss"])))
        if point.get("eval_loss") is not None:
            points["eval"].append((int(point["step"]), float(point["eval_loss"])))
    return points


def loss_svg(history: list[dict], title: str = "Loss", width: int = 640, height: int = 220,
             waiting: str = "no loss reported yet") -> str:
    """A small inline-SVG line chart of train and eval loss (no plotting library).

    ``waiting`` is said while there is no point yet (what the run is doing: "loading the
    base ...", "tokenizing 48 examples"). Drawn on the server, so it looks the same after every update: a live curve that
    is re-sent every few seconds cannot get stuck in a stale client-side chart state.
    """
    points = loss_points(history)
    every = [p for series in points.values() for p in series]
    if not every:
        return f"<div class='tl-loss tl-empty' id='loss-empty'>{esc(title)}: {esc(waiting)}.</div>"
    left, right, top, bottom = 52, 12, 26, 30
    steps = [s for s, _ in every]
    losses = [v for _, v in every]
    x0, x1 = min(steps), max(steps)
    y0, y1 = min(losses), max(losses)
    if x1 == x0:
        x1 = x0 + 1
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = (y1 - y0) * 0.08
    y0, y1 = max(0.0, y0 - pad), y1 + pad  # a loss is never negative: the axis stops at 0

    def sx(step):
        return left + (step - x0) / (x1 - x0) * (width - left - right)

    def sy(value):
        return top + (y1 - value) / (y1 - y0) * (height - top - bottom)

    parts = [f"<svg class='tl-loss-svg' viewBox='0 0 {width} {height}' width='100%' role='img' "
             f"aria-label='{esc(title)}' xmlns='http://www.w3.org/2000/svg' style='font: 11px sans-serif'>",
             f"<text x='{left}' y='14' fill='currentColor' font-weight='bold'>{esc(title)}</text>"]
    for i in range(5):  # horizontal grid with loss labels
        value = y0 + (y1 - y0) * i / 4
        y = sy(value)
        parts.append(f"<line x1='{left}' x2='{width - right}' y1='{y:.1f}' y2='{y:.1f}' stroke='#8884' />")
        parts.append(f"<text x='{left - 6}' y='{y + 4:.1f}' text-anchor='end' fill='currentColor'>{value:.3f}</text>")
    for step in sorted({x0, x1, (x0 + x1) // 2}):
        parts.append(f"<text x='{sx(step):.1f}' y='{height - 12}' text-anchor='middle' fill='currentColor'>{step}</text>")
    parts.append(f"<text x='{width - right}' y='{height - 1}' text-anchor='end' fill='currentColor' opacity='.7'>step</text>")
    legend_x = width - right - 230
    for name, series in points.items():
        if not series:
            continue
        color = SERIES_COLORS[name]
        coords = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in series)
        parts.append(f"<polyline class='tl-series-{name}' data-points='{len(series)}' points='{coords}' "
                     f"fill='none' stroke='{color}' stroke-width='2' />")
        parts += [f"<circle cx='{sx(s):.1f}' cy='{sy(v):.1f}' r='2.5' fill='{color}' />" for s, v in series[-1:]]
        parts.append(f"<text x='{legend_x}' y='{top - 4}' fill='{color}'>■ {name} {series[-1][1]:.3f}</text>")
        legend_x += 110
    parts.append("</svg>")
    return f"<div class='tl-loss'>{''.join(parts)}</div>"
