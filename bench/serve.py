"""Serving benchmark: hot-swap latency, the comparison batch, concurrent clients.

Runs the real serving endpoint as its own process (``tunelab serve`` on a free loopback
port, with a temporary home), as it runs in production, with the default base and four
random LoRA adapters (all-linear, r 8) made with peft in a temp folder, and drives it
over HTTP with TuneLab's client from this process.

1. Hot swap: adapter folder on disk -> first token served with it (load_inplace, then
   a streamed request), p50/p95 over 20 swaps, while two clients keep generating with
   the other adapters; every failed request during the swaps is counted (must be 0).
   The adapters share one shape, so after the first load the engine swaps by copying
   into preallocated slots; the bench waits for the background spare slots first
   (a warm server, /metrics ``tunelab_spare_slots_preparing`` 0), and reports how many
   loads took the slot path (``tunelab_adapter_slot_loads``).
2. Comparison: base + 4 adapters on one prompt x 64 new tokens as one mixed batch,
   against 5 sequential ``generate`` calls that switch adapters with ``set_adapter``.
   First the greedy answers of the mixed batch (every token picked, through vLLM's
   ``return_token_ids``) are checked against plain peft's greedy ``generate`` for each
   model; the speed-up is reported only when they are equal, or, in bf16, when every token
   lies within a bf16 tie of plain peft's best logit (:func:`served_like_reference`).
   The baseline runs in this process with the engine's torch thread count and dtype, after a warm-up
   generation with the base and each adapter, while the server is idle.
3. Concurrency: 8 clients over 4 adapters at once, against the same 8 requests one
   at a time through the same server; the speed-up is reported only when every
   concurrent answer equals the same request's answer served alone, or, in bf16, when
   both are plain peft's greedy answer up to bf16 ties.
4. During training (``--during-training``, or alone with ``--only-training``): 32-token
   answers one after another (a person reading each for ``--think-s``) while a real
   training job of the same base runs through the job runner on the same machine,
   against the same answers with nothing training; and the run's own time with those
   requests against the same run alone. Once with the cores shared (the engine's flag,
   :class:`backend.hardware.threads.CoreYield`) and once without (the run looks at
   another home's flag), in one run of the benchmark. Ratios: ``answer_p50_ratio``
   (during / idle, target <= 2) and ``training_delay_over_request_time`` (how much
   longer the run took, over the seconds the requests took; target <= 1).

``--kv-cache`` picks the server's KV cache (default: its own choice, ``auto``);
bench/serve_kv_cache.py compares the two caches on the same workloads.

Prints the results as JSON and writes bench/results/serve.json (with ``--only-training``:
bench/results/serve-training.json, named after the CPU with ``--out``).
Usage: python bench/serve.py [--base SPEC] [--swaps 20] [--new-tokens 64] [--kv-cache auto|preallocated|dynamic]
                             [--during-training | --only-training]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.machine import describe, load_average, write_results  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a short poem about autumn leaves falling in the park."}]
TOKEN = "bench-token"


def make_adapters(base_path: str, folder: Path, count: int = 4) -> list[Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for i in range(count):
        torch.manual_seed(100 + i)
        model = AutoModelForCausalLM.from_pretrained(base_path)
        peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                      init_lora_weights=False))
        peft_model.save_pretrained(folder / f"adapter{i}")
        paths.append(folder / f"adapter{i}")
    return paths


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))
    return ordered[index]


def bench_swaps(client, adapters: list[Path], swaps: int, failures: list) -> dict:
    """Folder on disk -> first token served with it, under background traffic."""
    stop = threading.Event()
    served = [0]

    def traffic(model: str) -> None:
        while not stop.is_set():
            try:
                client.chat(model, PROMPT, max_tokens=16, temperature=0)
                served[0] += 1
            except Exception as exc:  # noqa: BLE001 - counted, that is the point
                failures.append(f"{model}: {exc!r}")

    workers = [threading.Thread(target=traffic, args=(m,), daemon=True) for m in ("bg0", "bg1")]
    for w in workers:
        w.start()
    time.sleep(1.0)
    latencies, loads, firsts = [], [], []
    for i in range(swaps):
        path = adapters[i % len(adapters)]
        started = time.perf_counter()
        client.load_adapter("hot", str(path), inplace=True)
        loaded = time.perf_counter()
        try:
            first = next(iter(client.stream_chat("hot", PROMPT, max_tokens=2, temperature=0)))
            assert first is not None
        except Exception as exc:  # noqa: BLE001
            failures.append(f"hot: {exc!r}")
            continue
        latencies.append(time.perf_counter() - started)
        loads.append(loaded - started)
        firsts.append(latencies[-1] - loads[-1])
    stop.set()
    for w in workers:
        w.join(120)
    return {"swap_p50_s": round(statistics.median(latencies), 3),
            "swap_p95_s": round(percentile(latencies, 0.95), 3),
            "swap_load_call_p50_s": round(statistics.median(loads), 3),
            "swap_load_call_p95_s": round(percentile(loads, 0.95), 3),
            "swap_first_token_p50_s": round(statistics.median(firsts), 3),
            "swaps": len(latencies), "background_requests_served": served[0]}


def served_like_reference(reference, adapter: str | None, prompt_ids: list[int], served: list[int],
                          expected: list[int] | None, dtype) -> dict:
    """Whether ``served`` (every token an answer picked) is plain peft's greedy answer: equal to
    ``expected`` (its ``generate``), or, in bf16, a token within a bf16 tie of the reference's
    best logit at every position (read teacher-forced, tests.builders.greedy_gaps; the rule the
    GPU benchmark uses). In bf16 a batch and a single row take different kernels (on a CPU
    with AMX oneDNN changes kernel with the row count) and greedy answers part at near-ties:
    logits are bf16 numbers, 0.125 apart at SmolLM2's magnitudes, and exact ties occur."""
    import torch

    from tests.builders import answering_as, bf16_tie, greedy_gaps

    if served == expected:
        return {"equal": True, "within_bf16_ties": True}
    with answering_as(reference, adapter):
        gaps, scale = greedy_gaps(reference, prompt_ids, served)
    allowed = bf16_tie(scale)
    return {"equal": False, "within_bf16_ties": dtype == torch.bfloat16 and max(gaps) <= allowed,
            "largest_gap": round(max(gaps), 4), "allowed_gap": round(allowed, 4),
            "tokens_off_the_reference_best": sum(g > 0 for g in gaps), "tokens": len(gaps),
            "logit_scale": round(scale, 2)}


def bench_compare(client, reference, tokenizer, adapters: list[Path], new_tokens: int, base_name: str,
                  threads: int, dtype) -> dict:
    """One mixed batch over HTTP against 5 sequential generate() calls with set_adapter."""
    import torch

    models = [base_name] + [f"cmp{i}" for i in range(len(adapters))]
    for i, path in enumerate(adapters):
        client.load_adapter(f"cmp{i}", str(path))
    params = dict(max_tokens=new_tokens, temperature=0, extra_body={"ignore_eos": True})
    # warm-up and parity run: greedy, stopping at end-of-sequence, every token picked
    with ThreadPoolExecutor(max_workers=len(models)) as pool:
        futures = {m: pool.submit(client.chat_token_ids, m, PROMPT, max_tokens=new_tokens, temperature=0)
                   for m in models}
        greedy = {m: f.result() for m, f in futures.items()}
    started = time.perf_counter()
    answers = client.compare(PROMPT, models, **params)
    batched = time.perf_counter() - started
    assert len(answers) == len(models)

    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    prompt = ids["input_ids"][0].tolist()
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    torch.set_num_threads(threads)  # the engine's count, in this thread that runs the baseline
    model = reference
    with torch.inference_mode():
        with model.disable_adapter():  # warm-up: every path once, untimed
            model.generate(**ids, max_new_tokens=4, do_sample=False)
        for i in range(len(adapters)):
            model.set_adapter(f"cmp{i}")
            model.generate(**ids, max_new_tokens=4, do_sample=False)
        # correctness first: plain greedy peft answers (stopping at end-of-sequence) against
        # what the endpoint answered to the same comparison in one mixed batch
        expected = {}
        with model.disable_adapter():
            expected[base_name] = model.generate(**ids, max_new_tokens=new_tokens, do_sample=False)[0, len(prompt):]
        for i in range(len(adapters)):
            model.set_adapter(f"cmp{i}")
            expected[f"cmp{i}"] = model.generate(**ids, max_new_tokens=new_tokens, do_sample=False)[0, len(prompt):]
        started = time.perf_counter()
        with model.disable_adapter():
            model.generate(**ids, **kwargs)
        for i in range(len(adapters)):
            model.set_adapter(f"cmp{i}")
            model.generate(**ids, **kwargs)
        sequential = time.perf_counter() - started
        checks = {m: served_like_reference(model, None if m == base_name else m, prompt, greedy[m][1],
                                           expected[m].tolist(), dtype) for m in models}
    for i in range(len(adapters)):
        client.unload_adapter(f"cmp{i}")
    same_prompt = all(greedy[m][0] == prompt for m in models)
    equal = same_prompt and all(c["equal"] for c in checks.values())
    ok = same_prompt and all(c["within_bf16_ties"] for c in checks.values())
    return {"compare_batched_s": round(batched, 2), "compare_sequential_s": round(sequential, 2),
            "compare_sequential_torch_threads": torch.get_num_threads(),
            "compare_prompt_ids_equal": same_prompt,
            "compare_outputs_equal_reference": equal,
            "compare_outputs_within_bf16_ties": ok,
            "compare_mismatches": {m: {**c, "endpoint": tokenizer.decode(greedy[m][1], skip_special_tokens=True),
                                       "reference": tokenizer.decode(expected[m], skip_special_tokens=True)}
                                   for m, c in checks.items() if not c["equal"]},
            # a speed-up counts only when the batched outputs are plain peft's greedy answers
            "compare_speedup": round(sequential / batched, 2) if ok else None}


def bench_concurrency(client, reference, adapters: list[Path], new_tokens: int, dtype, clients: int = 8) -> dict:
    for i, path in enumerate(adapters):
        client.load_adapter(f"cc{i}", str(path))
    jobs = [f"cc{i % len(adapters)}" for i in range(clients)]
    params = dict(max_tokens=new_tokens, temperature=0, ignore_eos=True)
    started = time.perf_counter()
    alone = [client.chat_token_ids(model, PROMPT, **params) for model in jobs]
    one_at_a_time = time.perf_counter() - started
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        together = list(pool.map(lambda m: client.chat_token_ids(m, PROMPT, **params), jobs))
    concurrent = time.perf_counter() - started
    for i in range(len(adapters)):
        client.unload_adapter(f"cc{i}")
    tokens = clients * new_tokens
    # each concurrent answer must equal the same request served alone, or (bf16) both must be
    # plain peft's greedy answer up to bf16 ties, before the speed-up counts
    equal = alone == together
    checks = {}
    if not equal:
        import torch

        with torch.inference_mode():
            for i in range(clients):
                if alone[i] != together[i]:
                    adapter = f"cmp{i % len(adapters)}"  # the same folder, by the reference's name
                    checks[i] = {way: served_like_reference(reference, adapter, answer[0], answer[1], None, dtype)
                                 for way, answer in (("alone", alone[i]), ("together", together[i]))}
    ok = equal or all(c["within_bf16_ties"] for pair in checks.values() for c in pair.values())
    return {"concurrency_one_at_a_time_s": round(one_at_a_time, 2), "concurrency_concurrent_s": round(concurrent, 2),
            "concurrency_outputs_equal_alone": equal,
            "concurrency_outputs_within_bf16_ties": ok,
            "concurrency_mismatches": checks,
            "concurrency_speedup": round(one_at_a_time / concurrent, 2) if ok else None,
            "concurrency_tokens_per_s": round(tokens / concurrent, 1),
            "one_at_a_time_tokens_per_s": round(tokens / one_at_a_time, 1)}


# --- answers while a run trains -------------------------------------------------------------------

TRAIN_ROWS = [("My card was charged twice for one order.", "billing"), ("The app crashes when I open settings.", "bug"),
              ("Do you ship to Canada?", "other"), ("I need a refund for last month.", "billing"),
              ("The export button does nothing.", "bug"), ("What are your opening hours?", "other"),
              ("Why is there a fee on my invoice?", "billing"), ("Login fails with error 500.", "bug")]


def answer_latencies(client, model: str, new_tokens: int, until, think_s: float, at_least: int = 0) -> list[float]:
    """Greedy answers of ``new_tokens`` tokens one after another, ``think_s`` apart, until
    ``until()`` is true (and at least ``at_least`` of them); their latencies."""
    latencies = []
    while not until() or len(latencies) < at_least:
        started = time.perf_counter()
        client.chat(model, PROMPT, max_tokens=new_tokens, temperature=0)
        latencies.append(time.perf_counter() - started)
        time.sleep(think_s)
    return latencies


def one_training(runner, spec, data: Path, during=None) -> dict:
    """Run ``spec`` through ``runner`` (a real worker process); ``during(job_done)`` runs in
    this thread once the run's first step is about to start. Returns the run's metrics."""
    from backend.adapter_folder import read_meta

    job = runner.submit(spec, data)
    worker = threading.Thread(target=runner.run_pending, daemon=True)
    worker.start()
    while worker.is_alive() and not any(e["kind"] == "start" for e in runner.events(job)):
        time.sleep(0.05)
    extra = during(lambda: not worker.is_alive()) if during else None
    worker.join()
    if runner.progress(job)["status"] != "done":
        raise RuntimeError(f"the training job ended {runner.progress(job)}")
    metrics = read_meta(runner.paths.adapters / spec.name)["metrics"]
    return {"runtime_s": metrics["runtime_s"], "steps": metrics["steps"],
            "waited_for_serving_s": metrics.get("waited_for_serving_s", 0.0), "requests": extra}


def bench_during_training(client, base: str, home: Path, models_dir: Path, new_tokens: int, think_s: float,
                          idle_answers: int = 8, train_rows: int = 32) -> dict:
    """Answer latency while a run trains vs idle, and the run's delay vs the requests' time,
    with the cores shared and without, in one process of the server."""
    from backend.hparams import RunSpec
    from backend.settings import Settings
    from backend.training.jobs import JobRunner

    data = home.parent / "train-data" / "train.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"messages": [{"role": "user", "content": f"{text} (ticket {i})"}, {"role": "assistant", "content": label}]}
            for i in range(max(1, train_rows // len(TRAIN_ROWS))) for text, label in TRAIN_ROWS]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def spec(name):
        return RunSpec(name=name, base=base, goal="sort support emails", train={
            "epochs": 1, "batch_size": 4, "learning_rate": 5e-4, "eval_fraction": 0.0, "early_stopping": False})

    shared = JobRunner(Settings(home=home, models_dir=models_dir), poll_s=0.1)  # the server's home: its flag
    apart = JobRunner(Settings(home=home.parent / "home-apart", models_dir=models_dir), poll_s=0.1)  # another flag
    model = client.base_model()
    client.chat(model, PROMPT, max_tokens=new_tokens, temperature=0)  # warm
    idle = answer_latencies(client, model, new_tokens, lambda: True, think_s, at_least=idle_answers)
    alone = one_training(shared, spec("alone"), data)
    out = {"idle_answer_p50_s": round(statistics.median(idle), 3), "idle_answer_max_s": round(max(idle), 3),
           "training_alone_s": round(alone["runtime_s"], 2), "training_steps": alone["steps"]}
    for label, runner in (("shared", shared), ("not_shared", apart)):
        run = one_training(runner, spec(f"with-{label}"), data,
                           during=lambda done: answer_latencies(client, model, new_tokens, done, think_s))
        during = run["requests"]
        delay = run["runtime_s"] - alone["runtime_s"]
        out[label] = {"answers": len(during), "answer_p50_s": round(statistics.median(during), 3),
                      "answer_max_s": round(max(during), 3),
                      "answer_p50_ratio": round(statistics.median(during) / statistics.median(idle), 2),
                      "training_s": round(run["runtime_s"], 2), "training_delay_s": round(delay, 2),
                      "request_time_s": round(sum(during), 2),
                      "training_delay_over_request_time": round(delay / sum(during), 2),
                      "training_waited_for_serving_s": round(run["waited_for_serving_s"], 2)}
    shared.close()
    apart.close()
    return out


def stop_server(server) -> None:
    """Stop the server process :func:`start_server` started (killed if it does not stop in 30 s)."""
    server.terminate()
    try:
        server.wait(30)
    except Exception:  # noqa: BLE001 - it did not stop: make sure it does
        server.kill()


def start_server(base: str, threads: int, home: Path, models_dir: Path, timeout: float = 300.0,
                 kv_cache: str | None = None):
    """``tunelab serve`` in its own process on a free loopback port; returns (url, process)."""
    import subprocess

    import httpx

    port = free_port()
    # the adapters the benchmark makes lie in its temporary folder, beside the home: a root of the server's
    env = {**os.environ, "TUNELAB_HOME": str(home), "TUNELAB_MODELS_DIR": str(models_dir),
           "TUNELAB_API_TOKEN": TOKEN, "TUNELAB_ADAPTER_ROOTS": str(home.parent)}
    if kv_cache:
        env["TUNELAB_SERVE_KV_CACHE"] = kv_cache
    with open(home / "serve.log", "wb") as log:  # the child keeps its own handle
        process = subprocess.Popen([sys.executable, "-m", "backend.cli", "serve", "--base", base, "--port",
                                    str(port), "--threads", str(threads)],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tunelab serve exited ({process.returncode}):\n"
                               + (home / "serve.log").read_text()[-3000:])
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return url, process
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise TimeoutError(f"tunelab serve did not answer /health within {timeout} s")


def metric(url: str, name: str) -> float:
    import httpx

    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(f"{name} is not in {url}/metrics")


def wait_for_spares(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    time.sleep(0.2)  # the load call starts the preparation thread before it answers
    while metric(url, "tunelab_spare_slots_preparing") and time.monotonic() < deadline:
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="default", help="base spec (default: the offline default base)")
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--concurrency-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="engine torch threads (default: every core, as `tunelab serve` uses)")
    parser.add_argument("--out", default=None, help="default bench/results/serve.json "
                        "(serve-training.json with --only-training)")
    parser.add_argument("--during-training", action="store_true", help="also measure answers while a run trains")
    parser.add_argument("--only-training", action="store_true", help="only measure answers while a run trains")
    parser.add_argument("--answer-tokens", type=int, default=32)
    parser.add_argument("--think-s", type=float, default=1.0, help="pause between two answers while training")
    parser.add_argument("--train-rows", type=int, default=32, help="rows of the training run (batch 4, 1 epoch)")
    parser.add_argument("--kv-cache", default=None, choices=("auto", "preallocated", "dynamic"),
                        help="the server's KV cache (default: the server's own choice, 'auto')")
    args = parser.parse_args()
    args.out = args.out or str(ROOT / "bench" / "results" / ("serve-training.json" if args.only_training
                                                             else "serve.json"))
    if args.only_training:
        return main_training(args)

    import httpx
    import torch
    from transformers import AutoTokenizer

    from backend.bases.resolve import resolve_base
    from backend.serving.client import ServingClient
    from backend.settings import Settings
    from tests.builders import plain_peft_by_name

    settings = Settings()
    ref = resolve_base(args.base, settings)  # provisions the default base once, here
    started = time.perf_counter()
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-serve-") as tmp:
        tmp = Path(tmp)
        adapters = make_adapters(ref.path, tmp / "adapters")
        (tmp / "home").mkdir()
        url, server = start_server(args.base, args.threads, tmp / "home", settings.paths.models,
                                   kv_cache=args.kv_cache)
        failures: list[str] = []
        try:
            engine_info = httpx.get(url + "/info", timeout=10).json()["engine"]
            with ServingClient(url, TOKEN) as client:
                client.load_adapter("bg0", str(adapters[0]))
                client.load_adapter("bg1", str(adapters[1]))
                wait_for_spares(url)  # slots prepared after the first load of this shape
                slot_loads_before = metric(url, "tunelab_adapter_slot_loads")
                swaps = bench_swaps(client, adapters, args.swaps, failures)
                swaps["swap_loads_into_slots"] = int(metric(url, "tunelab_adapter_slot_loads") - slot_loads_before)
                client.unload_adapter("bg0")
                client.unload_adapter("bg1")
                client.unload_adapter("hot")
                dtype = getattr(torch, engine_info["dtype"])
                # plain peft, the base with every adapter by name: the answers' reference and the baseline
                reference = plain_peft_by_name(ref.path, {f"cmp{i}": p for i, p in enumerate(adapters)}, dtype)
                compare = bench_compare(client, reference, AutoTokenizer.from_pretrained(ref.path), adapters,
                                        args.new_tokens, ref.name, engine_info["threads"], dtype)
                concurrency = bench_concurrency(client, reference, adapters, args.concurrency_tokens, dtype)
                del reference
                if args.during_training:
                    concurrency["during_training"] = bench_during_training(
                        client, args.base, tmp / "home", settings.paths.models, args.answer_tokens, args.think_s,
                        train_rows=args.train_rows)
        finally:
            stop_server(server)

    results = {
        **swaps, "failed_during_swaps": len(failures), "failures": failures[:5],
        **compare, **concurrency,
        "targets": {"swap_p50_s": "<= 0.3", "compare_speedup": ">= 3", "concurrency_speedup": ">= 2.5",
                    "failed_during_swaps": "0"},
        "settings": {"base": ref.name, "base_path": ref.path, "adapters": "4 random LoRA, all-linear, r 8",
                     "swaps": args.swaps, "compare_new_tokens": args.new_tokens,
                     "concurrency_clients": 8, "concurrency_new_tokens": args.concurrency_tokens,
                     "server": "tunelab serve in its own process; clients in the benchmark process",
                     **{f"engine_{k}": v for k, v in engine_info.items()},
                     "compare_baseline": "plain PeftModel + generate(min_new_tokens=max_new_tokens), set_adapter "
                     "between the 4 adapters and disable_adapter for the base, in the benchmark process with the "
                     "engine's torch threads and dtype, warmed up on every adapter first, server idle meanwhile",
                     "benchmark_lock": "run under flock /tmp/tunelab-bench.lock (no other benchmark overlaps)"},
        "machine": describe(load_start),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    write_results(args.out, results)


def main_training(args) -> dict:
    """``--only-training``: the server alone, then answers while a run trains (section 4)."""
    from backend.bases.resolve import resolve_base
    from backend.serving.client import ServingClient
    from backend.settings import Settings

    settings = Settings()
    ref = resolve_base(args.base, settings)
    started, load_start = time.perf_counter(), load_average()
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-serve-") as tmp:
        tmp = Path(tmp)
        (tmp / "home").mkdir()
        url, server = start_server(args.base, args.threads, tmp / "home", settings.paths.models)
        try:
            with ServingClient(url, TOKEN) as client:
                during = bench_during_training(client, args.base, tmp / "home", settings.paths.models,
                                               args.answer_tokens, args.think_s, train_rows=args.train_rows)
        finally:
            stop_server(server)
    results = {
        "during_training": during,
        "targets": {"shared.answer_p50_ratio": "<= 2", "shared.training_delay_over_request_time": "<= 1"},
        "settings": {"base": ref.name, "answer_tokens": args.answer_tokens, "think_s": args.think_s,
                     "engine_threads": args.threads, "training": f"{args.train_rows} rows, batch 4, 1 epoch, no evaluation, "
                     "a real job-runner worker; 'not_shared': the same run watching another home's flag"},
        "machine": describe(load_start),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    return write_results(args.out, results)


if __name__ == "__main__":
    main()
