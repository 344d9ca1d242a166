"""Serving benchmark of the KV cache: transformers' DynamicCache against the preallocated one.

Two servers of the same base (``tunelab serve`` in its own process each, as
bench/serve.py runs it, both up throughout): one holds each batch's keys and values in
transformers' concatenating ``DynamicCache`` (``TUNELAB_SERVE_KV_CACHE=dynamic``), one in
the preallocated blocks of :mod:`backend.serving.kv_cache` (``preallocated``). Driven over
HTTP in alternating order (dynamic first in even rounds, preallocated first in odd ones)
for ``--rounds`` rounds, with four random LoRA adapters (all-linear, r 8):

- the comparison batch: base + 4 adapters x ``--new-tokens`` (64) tokens, one mixed batch;
- 8 concurrent clients over the 4 adapters x ``--concurrency-tokens`` (32): rows join
  running batches;
- the comparison batch with long answers (``--long-tokens``, 192), where concatenating
  copies the most.

Each workload's answers must be equal on both servers before its ratio counts:
``dynamic_over_preallocated`` (median seconds, dynamic / preallocated) > 1 means the
preallocated cache is faster. ``TUNELAB_SERVE_KV_CACHE=auto`` uses it on CPU only where
this is >= 1 (backend/serving/kv_cache.py, docs/performance.md).

Prints the results as JSON and writes bench/results/serve-kv-cache.json (name it after the
CPU with ``--out``).
Usage: python bench/serve_kv_cache.py [--base SPEC] [--rounds 3] [--threads N] [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench.machine import describe, load_average, write_results  # noqa: E402
from serve import PROMPT, TOKEN, make_adapters, start_server, stop_server  # noqa: E402

KV_KINDS = ("dynamic", "preallocated")


def kv_workloads(compare_tokens: int, concurrency_tokens: int, long_tokens: int, clients: int = 8) -> dict:
    """The workloads: name -> function(client, models) returning the answers."""
    def batch(tokens):
        def run(client, models):
            answers = client.compare(PROMPT, models, max_tokens=tokens, temperature=0, extra_body={"ignore_eos": True})
            return [answers[m] for m in models]
        return run

    def concurrent(client, models):
        jobs = [models[1 + i % (len(models) - 1)] for i in range(clients)]
        with ThreadPoolExecutor(max_workers=clients) as pool:
            return list(pool.map(lambda m: client.chat(m, PROMPT, max_tokens=concurrency_tokens, temperature=0,
                                                       extra_body={"ignore_eos": True}), jobs))

    return {f"compare_{compare_tokens}": batch(compare_tokens),
            f"concurrency_{clients}x{concurrency_tokens}": concurrent, f"compare_{long_tokens}": batch(long_tokens)}


def main_kv_cache(args) -> dict:
    """The same workloads on a server with each KV cache, alternating."""
    import httpx

    from backend.bases.resolve import resolve_base
    from backend.serving.client import ServingClient
    from backend.settings import Settings

    settings = Settings()
    ref = resolve_base(args.base, settings)
    started, load_start = time.perf_counter(), load_average()
    workloads = kv_workloads(args.new_tokens, args.concurrency_tokens, args.long_tokens)
    times: dict = {k: {w: [] for w in workloads} for k in KV_KINDS}
    answers: dict = {k: {} for k in KV_KINDS}
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-serve-") as tmp:
        tmp = Path(tmp)
        adapters = make_adapters(ref.path, tmp / "adapters")
        servers, clients, engines = {}, {}, {}
        try:
            for kind in KV_KINDS:
                (tmp / f"home-{kind}").mkdir()
                servers[kind] = start_server(args.base, args.threads, tmp / f"home-{kind}", settings.paths.models,
                                             kv_cache=kind)
                clients[kind] = ServingClient(servers[kind][0], TOKEN, timeout=1800)  # a loaded machine is slow
                engines[kind] = httpx.get(servers[kind][0] + "/info", timeout=10).json()["engine"]
                for i, path in enumerate(adapters):
                    clients[kind].load_adapter(f"kv{i}", str(path))
            models = [ref.name] + [f"kv{i}" for i in range(len(adapters))]
            for kind in KV_KINDS:  # warm-up: every adapter, both servers, untimed
                clients[kind].compare(PROMPT, models, max_tokens=4, temperature=0)
            for round_ in range(args.rounds):
                for kind in (KV_KINDS if round_ % 2 == 0 else KV_KINDS[::-1]):
                    for name, run in workloads.items():
                        t0 = time.perf_counter()
                        got = run(clients[kind], models)
                        times[kind][name].append(time.perf_counter() - t0)
                        answers[kind].setdefault(name, got)
        finally:
            for kind in servers:
                clients[kind].close()
                stop_server(servers[kind][1])
    out = {}
    for name in workloads:
        equal = answers["dynamic"][name] == answers["preallocated"][name]
        medians = {k: statistics.median(times[k][name]) for k in KV_KINDS}
        out[name] = {"dynamic_s": [round(t, 2) for t in times["dynamic"][name]],
                     "preallocated_s": [round(t, 2) for t in times["preallocated"][name]],
                     "answers_equal": equal,
                     # a ratio counts only when both caches gave the same answers
                     "dynamic_over_preallocated": round(medians["dynamic"] / medians["preallocated"], 3)
                     if equal else None}
    results = {
        "kv_cache": out,
        "target": "dynamic_over_preallocated >= 1 (the preallocated cache is no slower) for 'auto' to pick it on CPU",
        "settings": {"base": ref.name, "adapters": "4 random LoRA, all-linear, r 8", "rounds": args.rounds,
                     "order": "alternating: dynamic first in even rounds, preallocated first in odd ones",
                     "server": "tunelab serve in its own process per cache, both up throughout; clients here",
                     "engines": engines},
        "machine": describe(load_start),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    return write_results(args.out, results)



def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="default", help="base spec (default: the offline default base)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--concurrency-tokens", type=int, default=32)
    parser.add_argument("--long-tokens", type=int, default=192)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="engine torch threads (default: every core, as `tunelab serve` uses)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve-kv-cache.json"))
    return main_kv_cache(parser.parse_args())


if __name__ == "__main__":
    main()
