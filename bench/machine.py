"""What every benchmark writes beside its figures: the machine they were measured on, and
the JSON file itself.

Figures compare only on the same machine, and on these CPUs what they depend on is the
model and the vector flags (AVX2 only, AVX-512, bf16 units, AMX), so :func:`cpu` names
both; :func:`describe` adds the torch build, its threads and the load average around a
run. :func:`write_results` is the one way a benchmark writes its JSON.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

# the flags the CPU figures depend on: vector widths and bf16 / AMX units
_FLAG_PREFIXES = ("avx", "amx")


def cpu(cpuinfo: str | None = None) -> dict:
    """``{"cpu": model name, "flags": [avx..., amx..., ...bf16...], "cores": n}`` from
    /proc/cpuinfo (``cpuinfo``: its text, for tests)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    name, flags = "", []
    for line in cpuinfo.splitlines():
        if line.startswith("model name") and not name:
            name = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = [f for f in line.split(":", 1)[1].split() if f.startswith(_FLAG_PREFIXES) or "bf16" in f]
    return {"cpu": name or platform.processor() or platform.machine(), "flags": sorted(set(flags)),
            "cores": os.cpu_count()}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def describe(load_start: list[float] | None = None) -> dict:
    """:func:`cpu` with the torch build, its threads, the platform and the load average at
    the start (``load_start``, taken by the caller) and now."""
    import torch

    info = {**cpu(), "platform": platform.platform(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "load_average_end": load_average()}
    if load_start is not None:
        info["load_average_start"] = load_start
    return info


def write_results(path, report: dict, *, echo: bool = True) -> dict:
    """``report`` as JSON at ``path`` (its folder made; non-JSON values as text), and on
    stdout when ``echo``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, ensure_ascii=False, default=str)
    path.write_text(text + "\n", encoding="utf-8")
    print(text if echo else f"wrote {path}", flush=True)
    return report
