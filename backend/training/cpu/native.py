"""Build and load ``backend/native/cpu_kernels.c``: one-pass bf16 kernels for CPU training.

The C file is compiled once per machine (``cc -O3 -march=native -fopenmp``, about a
second) into ``<home>/.tunelab/native/<hash>/`` and loaded with ctypes; the hash covers
the source, the compiler and the CPU, so a change of any of them builds afresh. Loading
happens after torch is imported, so the library's OpenMP calls run on the libgomp (and
the threads) torch already has. Where there is no C compiler, no OpenMP or the build
fails, :func:`kernels` returns None and the pure-PyTorch kernels in
:mod:`backend.training.cpu.kernels` run instead; :func:`status` says why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("kernels.c")
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-fPIC", "-shared"]

_status = {"loaded": False, "why": "not built yet"}


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _cpu_signature() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    flags = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    return platform.machine() + flags


def build(cache_dir: Path) -> Path:
    """Compile the kernels into ``cache_dir`` (once; later calls return the built file)."""
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    source = SOURCE.read_bytes()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(source + version.encode() + _cpu_signature().encode()
                         + " ".join(FLAGS).encode()).hexdigest()[:16]
    target = cache_dir / key / "libtunelab_cpu_kernels.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built), "-lm"],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {result.stderr.strip()[-2000:]}")
        os.replace(built, target)  # atomic: a concurrent build or load sees the whole file or none
    return target


def _declare(lib) -> None:
    i64, u64, u32, f32, ptr = ctypes.c_int64, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_float, ctypes.c_void_p
    signatures = {
        "tl_dropout_mask": [i64, u64, u32, ptr],
        "tl_dropout_copy": [ptr, i64, u64, u32, ptr],
        "tl_add_kept": [ptr, ptr, i64, u64, u32],
        "tl_softmax_xent": [ptr, ptr, i64, i64, ptr],
        "tl_silu_mul": [ptr, ptr, i64, ptr],
        "tl_silu_mul_backward": [ptr, ptr, ptr, i64, ptr, ptr],
        "tl_rms_norm": [ptr, ptr, i64, i64, f32, ptr, ptr],
        "tl_rms_norm_backward": [ptr, ptr, ptr, ptr, i64, i64, ptr],
    }
    lib.tl_lora_vectorized.argtypes, lib.tl_lora_vectorized.restype = [], ctypes.c_int
    if lib.tl_lora_vectorized():  # built for AVX-512: the LoRA products are there too
        signatures.update({
            "tl_lora_rows": [ptr, i64, i64, ptr, i64, u64, u32, f32, ptr, ptr],
            "tl_lora_cols": [ptr, ptr, i64, i64, i64, ptr, ptr],
            "tl_lora_add": [ptr, i64, i64, ptr, ptr, i64, ptr],
        })
    for name, argtypes in signatures.items():
        function = getattr(lib, name)
        function.argtypes = argtypes
        function.restype = None


def default_cache_dir() -> Path:
    from backend.settings import Settings

    return Settings().paths.native


@functools.cache
def kernels():
    """The loaded library, or None (see :func:`status`). ``TUNELAB_NATIVE_KERNELS=false``
    turns it off."""
    importlib.import_module("torch")  # first: the library must find torch's libgomp loaded

    if os.environ.get("TUNELAB_NATIVE_KERNELS", "true").lower() in ("0", "false", "no", "off"):
        _status.update(loaded=False, why="turned off by TUNELAB_NATIVE_KERNELS")
        return None
    if platform.system() != "Linux":
        _status.update(loaded=False, why=f"not built on {platform.system()}")
        return None
    try:
        path = build(default_cache_dir())
        lib = ctypes.CDLL(str(path))
        _declare(lib)
    except (OSError, RuntimeError, AttributeError) as exc:
        _status.update(loaded=False, why=str(exc))
        return None
    _status.update(loaded=True, why=str(path))
    return lib


def status() -> dict:
    return dict(_status)


def dropout_threshold(p: float) -> int:
    """``p`` as the 32-bit threshold the kernels compare hashes against."""
    return min(2**32 - 1, max(0, round(p * 2**32)))


def draw_seed() -> int:
    """A seed (63 bits) from torch's default generator (so ``torch.manual_seed`` and a
    checkpoint's RNG state reproduce the dropout masks)."""
    import torch

    return int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))
