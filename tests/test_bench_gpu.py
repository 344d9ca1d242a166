"""bench/gpu.py without a GPU (issue 19): its plan and memory estimates (--dry-run), and the
whole script on tiny shapes (--smoke) so that the run prepared for a lent H100 does not
fail on a typo; the smoke figures themselves mean nothing and are not checked."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "bench" / "gpu.py"


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO_ROOT)


def test_the_dry_run_prints_the_plan_and_memory_estimates_without_a_gpu():
    done = _run("--dry-run", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout[done.stdout.index("{"):])
    one, eight = report["memory_estimates"]["1b"], report["memory_estimates"]["8b"]
    assert 1.1e9 < one["params"] < 1.4e9 and 7.5e9 < eight["params"] < 8.5e9  # the real models' sizes
    assert eight["bf16_base_gib"] > 14  # 8B weights in bf16
    assert eight["qlora_4bit_total_gib"] < eight["bf16_checkpointed_total_gib"] < eight["bf16_total_gib"]
    assert report["targets"]["qlora_8b_peak_gib"] == 12.0


def test_without_a_gpu_a_real_run_is_refused_with_what_to_do():
    import torch

    if torch.cuda.is_available():  # pragma: no cover - a GPU machine measures instead
        return
    done = _run("--only", "serve", timeout=120)
    assert done.returncode != 0 and "--dry-run" in done.stderr and "--smoke" in done.stderr


def test_the_smoke_run_measures_every_part_on_tiny_shapes(tmp_path):
    out = tmp_path / "gpu.json"
    done = _run("--smoke", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    failed = {part: results[part]["error"] for part in ("qlora", "serve") if "error" in results.get(part, {})}
    failed.update({shape: t["error"] for shape, t in results["train"].items() if "error" in t})
    assert not failed, failed  # a part that fails is recorded and the others still run: none may here
    train = results["train"]["smoke"]
    assert train["ours"]["tokens_per_s"] > 0 and train["baseline"]["tokens_per_s"] > 0
    assert train["loss_ratio"] is not None and train["ours"]["recipe"]
    serve = results["serve"]
    assert set(serve["decode_tokens_per_s"]) == {"b1_a0", "b1_a2", "b4_a0", "b4_a2"}
    assert serve["swap_p50_under_load_s"] > 0 and serve["go_to_first_adapter_answer_s"] > 0
    assert serve["parity"]["rows"] == 3 and serve["parity"]["equal_to_plain_peft"], serve["parity"]  # fp32: exact
    assert "verdicts" in results and results["machine"]["device"] in ("cpu", "cuda")
    assert {"cpu", "flags", "cores"} <= set(results["machine"])


def test_each_base_is_built_once_and_the_cheap_targets_run_first(tmp_path):
    """The one device run has 400 s: the 1B is trained then served, the 8B trained then
    quantized, each base built once and deleted after its last part."""
    sys.path.insert(0, str(REPO_ROOT))
    from bench.gpu import Bases, plan, run_order

    assert run_order(plan(False), {"train", "serve", "qlora"}) == [
        ("train", "1b"), ("serve", "1b"), ("train", "8b"), ("qlora", "8b")]
    assert run_order(plan(False), {"qlora", "serve"}) == [("serve", "1b"), ("qlora", "8b")]
    bases = Bases(tmp_path, "cpu", ["smoke", "smoke"])
    first = bases.get("smoke")
    written = (first / "config.json").stat().st_mtime_ns
    assert bases.get("smoke") == first and (first / "config.json").stat().st_mtime_ns == written  # not rebuilt
    bases.done_with("smoke")
    assert first.is_dir()  # one use left
    bases.done_with("smoke")
    assert not first.exists()


def _pins(path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return {name.lower().replace("_", "-"): v for name, v in
            (line.split("==") for line in lines if line.strip() and not line.startswith("#"))}


def test_the_gpu_wheels_are_the_versions_this_project_runs():
    """bench/gpu_wheels.txt (carried to the GPU machine) pins the versions constraints.txt
    installs, and the .venv has them, so the GPU run tests the same library code as
    `make test` (a new release on the registry changes neither)."""
    from importlib.metadata import version

    pins, locked = _pins(REPO_ROOT / "bench" / "gpu_wheels.txt"), _pins(REPO_ROOT / "constraints.txt")
    assert {"trl", "peft", "bitsandbytes", "pydantic-settings"} <= set(pins)
    assert pins == {name: locked.get(name) for name in pins}
    in_venv = {name for name in pins if name != "bitsandbytes"}  # beside the venv (Makefile), not in it
    assert {name: pins[name] for name in in_venv} == {name: version(name) for name in in_venv}


def _image() -> dict[str, str | None]:
    """bench/gpu_image.txt: the GPU image's packages, with the version where one was read."""
    lines = (REPO_ROOT / "bench" / "gpu_image.txt").read_text().splitlines()
    names = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return {name.split("==")[0]: (name.split("==")[1] if "==" in name else None) for name in names}


def test_every_carried_wheel_finds_what_it_requires_on_the_gpu_machine():
    """The carried wheels are installed there with --no-deps: whatever one requires must be
    in the image or carried too, at a version it accepts where the image's is known
    (fastapi 0.165 needs opentelemetry-api, which the image lacks: carried)."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    image, carried = _image(), _pins(REPO_ROOT / "bench" / "gpu_wheels.txt")
    assert image["transformers"] == "5.17.0" and "pyarrow" in image
    python_312 = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
                  "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
                  "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
    missing, refused = [], []
    for package in sorted(set(carried) - {"bitsandbytes"}):  # needs CUDA, not installed here; torch, numpy, packaging
        for line in requires(package) or []:
            need = Requirement(line)
            if need.marker is not None and not need.marker.evaluate(python_312):
                continue  # an extra, or another platform's
            name = need.name.lower().replace("_", "-")
            if name in carried:
                continue
            if name not in image:
                missing.append(f"{package} needs {need}")
            elif image[name] is not None and not need.specifier.contains(image[name], prereleases=True):
                refused.append(f"{package} needs {need}, the image has {image[name]}")
    assert not missing, f"carry these too (bench/gpu_wheels.txt): {missing}"
    assert not refused, refused


def test_every_installed_package_is_locked_to_one_version():
    """make installs with `-c constraints.txt`: each line pins one version, and what the
    .venv has is what it pins (torch comes from the Makefile's own pin)."""
    from importlib.metadata import version

    text = (REPO_ROOT / "constraints.txt").read_text()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[\w.]+", line) for line in lines), lines
    locked = _pins(REPO_ROOT / "constraints.txt")
    assert "torch" not in locked and "tunelab" not in locked
    for name in ("peft", "trl", "transformers", "gradio", "fastapi"):
        assert version(name) == locked[name], name
