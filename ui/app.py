"""The page: the assistant chat on the left, the workspace tabs on the right.

``create_ui(service_factory)`` builds the Blocks; it calls ``service_factory()`` only
inside event handlers, never while building, so importing or building the page loads
no model and opens no database. Per-session state is one
:class:`backend.studio.session.SessionState` in a ``gr.State`` (Gradio copies it per
browser session); everything shared lives in the backend.
"""

from __future__ import annotations

from typing import Callable

import gradio as gr

from backend.errors import ConfigError
from backend.studio.session import SessionState

from . import (adapters_panel, assistant_panel, base_panel, chat_panel, compare_panel, data_panel, equalizer_panel,
               plan_panel, train_panel)
from .common import Ctx, edge
from .login import guarded_login

CSS = """
#tl-title h1 { margin: 0; font-size: 1.5rem; }
#tl-title p { margin: 0; opacity: .75; }
.tl-runs { display: flex; flex-direction: column; gap: .5rem; }
.tl-run { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: .5rem .75rem; }
.tl-run-head { display: flex; gap: .5rem; align-items: baseline; }
.tl-badge { font-size: .75rem; padding: 0 .4rem; border-radius: 6px; background: var(--neutral-200); color: #111; }
.tl-done .tl-badge { background: #bbf7d0; } .tl-failed .tl-badge { background: #fecaca; }
.tl-running .tl-badge { background: #fed7aa; } .tl-cancelled .tl-badge { background: #e5e7eb; }
.tl-job { opacity: .6; font-size: .8rem; }
.tl-bar { height: 8px; background: var(--neutral-200); border-radius: 4px; overflow: hidden; margin: .35rem 0; }
.tl-bar > div { height: 100%; background: #ea580c; transition: width .5s; }
.tl-done .tl-bar > div { background: #16a34a; }
.tl-run-info { font-size: .8rem; opacity: .8; } .tl-error { color: #b91c1c; font-size: .8rem; white-space: pre-wrap; }
.tl-empty { opacity: .7; padding: .5rem; }
.tl-answer { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: .5rem; }
.tl-answer-text { min-height: 4rem; white-space: pre-wrap; }
.tl-heatmap table { border-collapse: collapse; font-size: .7rem; }
.tl-heatmap th, .tl-heatmap td { padding: 2px 4px; text-align: center; border: 1px solid var(--border-color-primary); }
.tl-heatmap .tl-none { opacity: .3; } .tl-caption { font-size: .8rem; opacity: .7; margin-bottom: .25rem; }
.tl-board table { border-collapse: collapse; font-size: .8rem; width: 100%; }
.tl-board th, .tl-board td { padding: 2px 6px; text-align: left; border-bottom: 1px solid var(--border-color-primary); }
.tl-board .tl-best { font-weight: 600; background: rgba(22,163,74,.12); } .tl-why { font-size: .8rem; margin: .25rem 0; }
.tl-col-input { background: rgba(37,99,235,.08); } .tl-col-output { background: rgba(234,88,12,.12); }
.tl-news { font-size: .85rem; padding: .4rem .6rem; border-radius: 8px; background: rgba(22,163,74,.12); margin-top: .25rem; }
/* Toasts at the bottom: never over the workspace's tab bar. At phone width the assistant chat
   shrinks to a strip, so the tabs sit in the first screen (tests/ui/test_journey.py checks both). */
.toast-wrap { top: auto !important; bottom: 12px !important; }
@media (max-width: 640px) {
  #tl-title p { display: none; }
  #assistant-chat { height: 30vh !important; min-height: 180px; }
}
"""

TITLE = "TuneLab"


def create_ui(service_factory: Callable) -> gr.Blocks:
    """The whole page. ``service_factory()`` returns the (shared) backend Service, built by
    ``tunelab up`` (backend/up.py) with the settings it was given."""
    with gr.Blocks(title=TITLE, fill_width=True) as demo:
        state = gr.State(SessionState())
        ctx = Ctx(service=service_factory, state=state)
        gr.Markdown(f"# {TITLE}\nDescribe a goal, drop examples, train LoRA adapters, compare them with the base.",
                    elem_id="tl-title")
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=360):
                assistant_panel.build(ctx)
            with gr.Column(scale=3, min_width=480):
                with gr.Tabs(elem_id="workspace"):
                    with gr.Tab("Plan", id="plan", elem_id="tab-plan"):
                        plan_panel.build(ctx)
                    with gr.Tab("Data", id="data", elem_id="tab-data"):
                        data_panel.build(ctx)
                    with gr.Tab("Base", id="base", elem_id="tab-base"):
                        base_panel.build(ctx)
                    with gr.Tab("Equalizer", id="equalizer", elem_id="tab-equalizer") as equalizer_tab:
                        equalizer_panel.build(ctx, equalizer_tab)
                    with gr.Tab("Train", id="train", elem_id="tab-train"):
                        train_panel.build(ctx)
                    with gr.Tab("Compare", id="compare", elem_id="tab-compare"):
                        compare_panel.build(ctx)
                    with gr.Tab("Chat", id="chat", elem_id="tab-chat"):
                        chat_panel.build(ctx)
                    with gr.Tab("Adapters", id="adapters", elem_id="tab-adapters"):
                        adapters_panel.build(ctx)
        ctx.wire()
        # A reload shows what the backend knows (runs, adapters, ratings) at once.
        demo.load(edge(ctx.refresh_all), [state], ctx.refresh_outputs())
    return demo


def launch_kwargs(settings, host: str | None = None, port: int | None = None) -> dict:
    """Keyword arguments for ``Blocks.launch``: bind address, upload cap, optional login
    (slowed after repeated failures, ui/login.py), style."""
    kwargs = dict(server_name=host or settings.host, server_port=port or settings.ui_port, css=CSS,
                  show_error=False, footer_links=["api"], max_file_size=int(settings.max_upload_mb * 1024 * 1024))
    if settings.auth:
        user, sep, password = settings.auth.partition(":")
        if not sep or not user or not password:
            raise ConfigError(f"TUNELAB_AUTH={settings.auth!r} is not 'user:password'.",
                              fix="Set TUNELAB_AUTH=user:password, or unset it for no login.")
        kwargs["auth"] = guarded_login(user, password, free_tries=settings.login_free_tries)
        kwargs["auth_message"] = "TuneLab: log in with the user and password from TUNELAB_AUTH."
    return kwargs
