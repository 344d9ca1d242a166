"""Prometheus metrics of one app (``GET /metrics``), in a registry of its own (no global state)."""

from __future__ import annotations

import time
from typing import Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from backend.serving.requests import TokenEvent

router = APIRouter()


class Metrics:
    """Requests, tokens and latencies the routes count, and gauges read from the engine when scraped."""

    def __init__(self, engine_of: Callable[[], object | None]):
        self.registry = CollectorRegistry()
        self.requests = Counter("tunelab_requests", "Generation requests by route and HTTP status.",
                                ["route", "status"], registry=self.registry)
        self.prompt_tokens = Counter("tunelab_prompt_tokens", "Prompt tokens processed.", registry=self.registry)
        self.generated_tokens = Counter("tunelab_generated_tokens", "Tokens generated.", registry=self.registry)
        self.latency = Histogram("tunelab_request_latency_seconds", "Time from request to last token.",
                                 registry=self.registry,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128))
        self.first_token = Histogram("tunelab_time_to_first_token_seconds", "Time from request to first token.",
                                     registry=self.registry,
                                     buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16))
        self.adapter_ops = Counter("tunelab_adapter_operations", "Adapter loads and unloads by outcome.",
                                   ["op", "outcome"], registry=self.registry)

        def gauge(name: str, description: str, read: Callable[[object], float]) -> None:
            Gauge(name, description, registry=self.registry).set_function(
                lambda: read(engine) if (engine := engine_of()) is not None else 0)

        gauge("tunelab_queue_depth", "Requests waiting for a batch slot.", lambda e: e.queue_depth())
        gauge("tunelab_running_requests", "Requests in the running batch.", lambda e: e.running())
        gauge("tunelab_adapters_loaded", "Adapters loaded in the engine.", lambda e: len(e.adapters()))
        gauge("tunelab_batch_rows_max", "Most rows ever run in one forward pass.", lambda e: e.stats.max_rows)
        gauge("tunelab_adapter_slot_loads", "Adapter loads that copied into a prepared slot (no module rebuilt).",
              lambda e: e.stats.slot_loads)
        gauge("tunelab_spare_slots_preparing", "1 while spare adapter slots are being prepared in the background, "
              "else 0.", lambda e: int(e.preparing_spares()))

    def observe(self, route: str, last: TokenEvent | None, started: float, first: float | None) -> None:
        """Count one generation request that ran (``last``: its final event, None if it sent none)."""
        status = "200" if last is not None and last.finish_reason != "error" else "500"
        self.requests.labels(route, status).inc()
        if last is not None:
            self.prompt_tokens.inc(last.prompt_tokens)
            self.generated_tokens.inc(last.completion_tokens)
        self.latency.observe(time.perf_counter() - started)
        if first is not None:
            self.first_token.observe(first - started)

    def render(self) -> bytes:
        return generate_latest(self.registry)


@router.get("/metrics")
async def prometheus_metrics(request: Request):
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
