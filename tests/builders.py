"""Builders the tests share: tiny adapters, engines, reference outputs and example files.

Not a test module: conftest.py and the tests import these plain functions (fixtures
that wrap them live in the conftest.py files).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from backend.bases.resolve import BaseRef
from backend.hparams import RunSpec
from backend.names import adapter_path
from backend.training.run import write_adapter_folder

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# the browser tests' skip: Chromium is a system package, not a wheel
NEEDS_CHROMIUM = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                    reason=f"{CHROMIUM} is missing: `make browser` (apt-get install chromium) installs it")



def make_lora(base: Path, out: Path, seed: int, *, r: int = 4, alpha: int = 8,
              targets="all-linear", scale: float = 0.5, model=None, **config) -> Path:
    """A LoRA adapter for ``base`` with random (non-zero) B, so it changes the outputs.
    ``model``: ``base`` already loaded, to make several adapters on one copy of it (it is
    given back without the adapter's layers)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    loaded = model if model is not None else AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(loaded, LoraConfig(r=r, lora_alpha=alpha, target_modules=targets,
                                                   init_lora_weights=False, **config))
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0.0, scale)
    peft_model.save_pretrained(out)
    if model is not None:
        peft_model.unload()  # the caller's base again, without this adapter's layers
    return Path(out)


def plain_peft(base: Path, adapter: Path | None, dtype=None, device: str = "cpu"):
    """The reference an engine is checked against: the base from its folder on ``device`` in
    ``dtype`` (fp32 unless given), ``adapter`` on it through plain ``PeftModel.from_pretrained``
    where given, in eval mode."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype or torch.float32).to(device)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    return model.eval()


def plain_peft_by_name(base: Path, adapters: dict[str, Path], dtype=None, device: str = "cpu"):
    """:func:`plain_peft` with several adapters on the one base, each loaded under its name
    (:func:`answering_as` picks one, or the base)."""
    from peft import PeftModel

    (first, path), *rest = adapters.items()
    model = PeftModel.from_pretrained(plain_peft(base, None, dtype, device), str(path), adapter_name=first)
    for name, path in rest:
        model.load_adapter(str(path), adapter_name=name)
    return model.eval()


@contextlib.contextmanager
def answering_as(reference, adapter: str | None):
    """``reference`` (:func:`plain_peft_by_name`) answering as ``adapter``, or as the base for None."""
    if adapter is None:
        with reference.disable_adapter():
            yield reference
    else:
        reference.set_adapter(adapter)
        yield reference


def reference_tokens(base: Path, adapter: Path | None, prompt_ids: list[int], n: int, dtype=None,
                     device: str = "cpu") -> list[int]:
    """Greedy tokens from :func:`plain_peft` + ``generate`` on ``device``."""
    import torch

    model = plain_peft(base, adapter, dtype, device)
    ids = torch.tensor([prompt_ids], device=device)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False)
    return out[0, len(prompt_ids):].tolist()


def greedy_gaps(reference, prompt_ids: list[int], tokens: list[int]) -> tuple[list[float], float]:
    """How far each of ``tokens`` (every token picked, :func:`picked_tokens`) lies below the
    ``reference`` model's best logit (:func:`plain_peft`) when it reads the same prefix (one
    teacher-forced forward): 0 where it is the reference's greedy choice. Returns the gaps
    and the largest logit's magnitude. In bf16 a batch and a single row take different
    kernels, and on near-tied logits greedy answers may part: a token within a few roundings
    of the best is one the reference could have chosen."""
    import torch

    device = next(reference.parameters()).device
    ids = torch.tensor([prompt_ids + tokens], device=device)
    with torch.no_grad():
        logits = reference(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
    chosen = logits.gather(1, torch.tensor(tokens, device=device)[:, None])[:, 0]
    return (logits.max(1).values - chosen).tolist(), logits.abs().max().item()


def picked_tokens(handle) -> list[int]:
    """Every token a request's answer picked, special ones included (``Completion.token_ids``
    leaves those out), as a reference reads them."""
    return [event.token_id for event in handle if event.token_id is not None]


def bf16_tie(magnitude: float) -> float:
    """The gap :func:`greedy_gaps` allows in bf16: 5% of the logits' scale (bf16 keeps 8
    significant bits, 0.4%, and a forward rounds at every layer). On the tiny Llama a token
    of the reference's ranking sits within 0.01 of the best, another adapter's ~0.7 away."""
    return 0.05 * max(1.0, magnitude)


class LiveBytes(TorchDispatchMode):
    """Bytes of tensor storage alive that were made inside the mode, and their peak: the CPU's
    analogue of torch's CUDA peak (tests/bases/test_memory.py). A mode that reads every
    output's storage, as a packed (opaque) oneDNN weight cannot be read."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._refs: dict[int, weakref.ref] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                self._count(tensor.untyped_storage())
        return out

    def _count(self, storage) -> None:
        key = storage._cdata
        if key in self._refs:
            return
        size = storage.nbytes()
        self.live += size
        self.peak = max(self.peak, self.live)

        def freed(_ref, key=key, size=size):
            self.live -= size
            self._refs.pop(key, None)

        self._refs[key] = weakref.ref(storage, freed)


def make_engine(base: Path, dtype=None, device: str = "cpu", **kwargs):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend.serving.engine import Engine

    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype or torch.float32).to(device)
    return Engine(model, tokenizer, base_name="tiny-llama", base_path=str(base), **kwargs).start()


WINES = [
    ("Deep ruby colour with aromas of black cherry and firm tannins.", "red"),
    ("Pale straw yellow, crisp acidity, notes of green apple and lime.", "white"),
    ("Dark purple, full-bodied, blackcurrant and tobacco.", "red"),
    ("Golden, honeyed, apricot and a buttery finish.", "white"),
    ("Garnet rim, dried cherry, leather and earth.", "red"),
    ("Almost clear, citrus zest and wet stone.", "white"),
    ("Inky black, plum jam and pepper.", "red"),
    ("Lemon yellow, peach and elderflower.", "white"),
    ("Brick red, tea leaves and roses.", "red"),
    ("Green-gold, grapefruit and cut grass.", "white"),
    ("Purple-red, raspberry and violet.", "red"),
    ("Pale gold, pear and almond.", "white"),
]


def write_wines(folder: Path, name: str = "wine.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with path.open("w", encoding="utf-8") as fh:
        for text, label in WINES:
            fh.write(json.dumps({"messages": [{"role": "user", "content": text},
                                              {"role": "assistant", "content": label}]}) + "\n")
    return path


def write_bad(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bad.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json at all\n', encoding="utf-8")
    return path


SUPPORT_EMAILS = {
    "billing": ["I was charged twice this month, can you refund one payment?",
                "My invoice shows the wrong amount for the yearly plan.",
                "Please update the card on file, the old one expired.",
                "Why did my subscription price go up without notice?"],
    "bug": ["The app crashes every time I open the settings page.",
            "Uploading a photo fails with error 500 since the update.",
            "The export button does nothing when I click it.",
            "Search returns no results even for exact titles."],
    "other": ["Do you have a student discount?",
              "Can I change the interface language to German?",
              "Where can I find your privacy policy?",
              "Are you hiring support staff in Lisbon?"],
}


def write_support_emails(folder: Path, counts: dict[str, int] | None = None, *, name: str = "emails.csv",
                         columns: tuple[str, str] = ("email", "label")) -> Path:
    """A CSV of short support emails with non-standard column names (``email,label``), as a
    person brings it: 16 per label by default (48 rows), or ``counts`` per label."""
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    counts = counts or {label: 16 for label in SUPPORT_EMAILS}
    path = folder / name
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for label, count in counts.items():
            texts = SUPPORT_EMAILS[label]
            for i in range(count):
                writer.writerow([f"{texts[i % len(texts)]} (ref {label[:2]}-{i})", label])
    return path


COLORS = {"wine": "red", "cherry": "red", "rose": "red", "blood": "red",
          "snow": "white", "milk": "white", "cloud": "white", "salt": "white"}


def write_color_data(folder: Path, n: int = 16) -> Path:
    """~16 normalized rows "color of X?" -> "red"/"white", as the data doctor writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    items = list(COLORS.items())
    rows = [{"messages": [{"role": "user", "content": f"color of {obj}?"},
                          {"role": "assistant", "content": color}]}
            for obj, color in (items[i % len(items)] for i in range(n))]
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tiny_spec(name: str, base: Path, **train) -> RunSpec:
    knobs = {"epochs": 2, "batch_size": 4, "max_length": 64, "learning_rate": 5e-3, **train}
    return RunSpec(name=name, base=str(base), goal="say the color", train=knobs)


def folder_ref(path: Path) -> BaseRef:
    return BaseRef(spec=str(path), kind="folder", name=path.name, path=str(path))


def make_earlier_adapter(settings, base: Path, name: str = "earlier") -> Path:
    """A finished adapter (fresh LoRA weights, contract files, store row 'done')."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from backend.store import Store

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, target_modules="all-linear"))
    out = settings.paths.ensure().adapters / name
    write_adapter_folder(model, out, {"name": name, "status": "done", "verdict": None})
    Store(settings.db_url).upsert_adapter(name, base=str(base), status="done")
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def answer_loss(model, tokenizer, rows: list[list[dict]]) -> float:
    """Mean loss on answer tokens only, the quantity training lowers."""
    import torch

    total, count = 0.0, 0
    for messages in rows:
        prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        ids = tokenizer(full, return_tensors="pt", add_special_tokens=False)["input_ids"]
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        labels = ids.clone()
        labels[:, :n_prompt] = -100
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss
        n = int((labels[:, 1:] != -100).sum())
        total += float(loss) * n
        count += n
    return total / count


def exact_match_proof(correct: int, total: int = 30, *, base_few_shot: int = 13, ci=None,
                      suggestion: str = "beats_base") -> dict:
    """A stored proof of a checkable task: the base few-shot and the adapter on ``total`` held-out rows."""
    def part(n: int, interval=None) -> dict:
        return {"correct": n, "total": total, "score": n / total, "ci95": interval}

    return {"task": "classification", "judged_by": {"rows": total, "source": "split"},
            "exact_match": {"k": 6, "base_zero_shot": part(4), "base_few_shot": part(base_few_shot),
                            "adapter": part(correct, ci)},
            "verdict": {"suggestion": suggestion, "text": suggestion.replace("_", " ")}}


def add_finished_adapter(service, name: str, *, sweep: str | None = None, proof: dict | None = None,
                         size: int = 1000, train_seconds: float = 60.0) -> Path:
    """An adapter as a finished job leaves it, without training one: its job (queued in
    ``sweep``), its store row, and a folder whose tunelab.json holds ``proof`` and whose
    weights file has ``size`` bytes (not loadable: for listings and leaderboards only)."""
    job = service.store.add_job(name, {"spec": {"name": name}, "train_file": "/none.jsonl"}, sweep=sweep)
    service.store.update_job(job.id, status="done")
    service.store.upsert_adapter(name, base="default", status="done", job_id=job.id, goal="classify news")
    folder = adapter_path(service.paths.adapters, name)
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * size)
    (folder / "tunelab.json").write_text(json.dumps({"name": name, "status": "done", "proof": proof,
                                                     "metrics": {"train_seconds": train_seconds}}))
    return folder


@contextlib.contextmanager
def running_up(home: Path, base: str, extra_env: dict, log_path: Path, *, stop_with: int = signal.SIGINT,
               ignoring_sigint: bool = False):
    """`tunelab up` (`python -m backend.cli up`) over ``home`` on free ports, as a person starts
    it; yields the page URL. Ctrl-C (SIGINT; ``stop_with`` another signal) stops it, and it
    must stop cleanly. ``ignoring_sigint``: started the way a non-interactive shell starts a
    background job, SIGINT ignored. The browser tests' server (tests/ui/test_browser.py,
    tests/ui/test_journey.py)."""
    env = {**os.environ, "TUNELAB_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **extra_env}
    for name in ("TUNELAB_DATABASE_URL", "TUNELAB_API_TOKEN"):
        env.pop(name, None)
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "backend.cli", "up", "--port", "0", "--server-port", "0",
                                 "--base", base], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignoring_sigint
                                else None)
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None:
            assert proc.poll() is None, f"tunelab up exited early:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"tunelab up did not start:\n{log_path.read_text()[-3000:]}"
            match = re.search(r"TuneLab page:\s+(\S+)", log_path.read_text())
            url = match.group(1) if match else None
            time.sleep(0.3)
        yield url
    finally:
        proc.send_signal(stop_with)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"tunelab up did not stop cleanly on Ctrl-C:\n{log_path.read_text()[-3000:]}"


def wait_for(predicate, timeout: float = 120.0, poll: float = 0.2):
    """``predicate()``'s first truthy value, polled every ``poll`` s; an AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")


class ScriptedChatModel:
    """An OpenAI-compatible /v1/chat/completions that plays back scripted turns.

    A capable tool-calling model cannot run on this machine; this stands in for one so
    the real langchain agent, the real tools and the real service run end to end. It
    records every request so the test can check what the agent sent.
    """

    def __init__(self, turns: list[dict]):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.turns, self.requests = list(turns), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                turn = outer.turns.pop(0)
                message = {"role": "assistant", "content": turn.get("content")}
                if turn.get("tool"):
                    name, args = turn["tool"]
                    message["tool_calls"] = [{"id": f"call_{len(outer.requests)}", "type": "function",
                                              "function": {"name": name, "arguments": json.dumps(args)}}]
                payload = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                      "choices": [{"index": 0, "message": message,
                                                   "finish_reason": "tool_calls" if turn.get("tool") else "stop"}],
                                      "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def round_spec(name: str, method: str, base, parent: str = "parent", **train) -> RunSpec:
    """A preference round (``dpo`` or ``kto``) from ``parent`` with small, fast knobs."""
    knobs = {"epochs": 3, "batch_size": 4, "max_length": 64, "learning_rate": 5e-3, "beta": 0.5, **train}
    return RunSpec(name=name, base=str(base), method=method, parent=parent, train=knobs)


def make_parent(base, out):
    """A parent adapter whose LoRA weights are not zero, so it differs from the base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    write_adapter_folder(model, out, {"name": out.name, "status": "done", "goal": "say the color",
                                      "hyperparameters": {"lora": {"r": 4, "alpha": 8}}})
    return out


@contextlib.contextmanager
def chromium():
    """Debian's headless Chromium under Playwright (:data:`CHROMIUM`, :data:`CHROMIUM_ARGS`);
    closed on leaving. Tests that open many tabs share one; :func:`browser_page` opens one."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def browser_page(url: str, *, viewport: dict | None = None):
    """One headless Chromium tab on TuneLab's page at ``url``, once the assistant's box is
    there; closed on leaving."""
    with chromium() as browser:
        tab = browser.new_page(viewport=viewport or {"width": 1500, "height": 1100})
        tab.set_default_timeout(30_000)
        tab.goto(url, wait_until="load")
        tab.wait_for_selector("#assistant-input textarea")
        yield tab


def assert_same_forward_and_backward(out, ref, inputs, ref_inputs, *, tol: float, grad_tol: float | None = None,
                                     seed: int = 0) -> None:
    """``out`` (from ``inputs``) equals ``ref`` (from ``ref_inputs``, detached copies of the
    same tensors), and one random upstream gradient gives both sets of inputs the same grads."""
    import torch

    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    grad = torch.randn(out.shape, generator=torch.Generator(device=out.device).manual_seed(seed),
                       device=out.device, dtype=out.dtype)
    out.backward(grad)
    ref.backward(grad)
    grad_tol = tol if grad_tol is None else grad_tol
    for mine, theirs in zip(inputs, ref_inputs):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=grad_tol, atol=grad_tol)


def run_bench(script: str, *args: str, tmp_path: Path, timeout: int = 600) -> dict:
    """``bench/<script>`` with ``args``, run as a person runs it (its own process, from the
    project root, a home under ``tmp_path``); asserts it succeeded and returns the JSON it
    wrote (``--out`` under ``tmp_path``)."""
    root, out = Path(__file__).resolve().parent.parent, tmp_path / "results.json"
    done = subprocess.run([sys.executable, str(root / "bench" / script), *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=timeout, cwd=root,
                          env={**os.environ, "TUNELAB_HOME": str(tmp_path / "home")})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())
