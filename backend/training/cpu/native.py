"""Build and load ``kernels.c`` (beside this file): one-pass bf16 kernels for CPU training.

The C file is compiled once per machine (``cc -O3 -march=native -fopenmp``) into the
settings' native cache (``<home>/.tunelab/native/<hash>/``) and loaded with ctypes; the
hash covers the source, the compiler and the CPU, so a change of any of them builds
afresh. Loading happens after torch is imported, so the library's OpenMP calls run on
the libgomp (and the threads) torch already has.

A training run asks for the kernels with :func:`use` and a :class:`NativeBuild` made
from its settings; the kernel modules then take the library from :func:`kernels`.
Where the setting is off, there is no C compiler or OpenMP, or the build fails,
:func:`kernels` returns None and the same maths runs as torch ops; :func:`status` says
why. This module imports no torch at its top: the worker's command line and the job
runner import :class:`NativeBuild` from it.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from backend.settings import Settings

SOURCE = Path(__file__).with_name("kernels.c")
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-fPIC", "-shared"]
TURNED_OFF = "turned off by the native_kernels setting (TUNELAB_NATIVE_KERNELS=false)"

_state: dict = {"lib": None, "loaded": False, "why": "not loaded: no training run has asked for them yet"}


@dataclass(frozen=True)
class NativeBuild:
    """Whether CPU training uses the native kernels, and the folder their build is cached in."""

    enabled: bool
    cache_dir: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> NativeBuild:
        """``Settings.native_kernels`` and ``settings.paths.native``."""
        return cls(enabled=settings.native_kernels, cache_dir=settings.paths.native)


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
    target = Path(cache_dir) / key / "libtunelab_cpu_kernels.so"
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


def declare(lib) -> None:
    """Give the library's functions their C signatures (the LoRA products only where it has them)."""
    i64, u64, u32, f32, ptr_ = ctypes.c_int64, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_float, ctypes.c_void_p
    signatures = {
        "tl_dropout_mask": [i64, u64, u32, ptr_],
        "tl_dropout_copy": [ptr_, i64, u64, u32, ptr_],
        "tl_add_kept": [ptr_, ptr_, i64, u64, u32],
        "tl_softmax_xent": [ptr_, ptr_, i64, i64, ptr_],
        "tl_silu_mul": [ptr_, ptr_, i64, ptr_],
        "tl_silu_mul_backward": [ptr_, ptr_, ptr_, i64, ptr_, ptr_],
        "tl_rms_norm": [ptr_, ptr_, i64, i64, f32, ptr_, ptr_],
        "tl_rms_norm_backward": [ptr_, ptr_, ptr_, ptr_, i64, i64, ptr_],
    }
    lib.tl_lora_vectorized.argtypes, lib.tl_lora_vectorized.restype = [], ctypes.c_int
    if lib.tl_lora_vectorized():  # built for AVX-512: the LoRA products are there too
        signatures.update({
            "tl_lora_rows": [ptr_, i64, i64, ptr_, i64, u64, u32, f32, ptr_, ptr_],
            "tl_lora_cols": [ptr_, ptr_, i64, i64, i64, ptr_, ptr_],
            "tl_lora_add": [ptr_, i64, i64, ptr_, ptr_, i64, ptr_],
        })
    for name, argtypes in signatures.items():
        function = getattr(lib, name)
        function.argtypes = argtypes
        function.restype = None


@functools.cache
def _load(cache_dir: Path) -> tuple[ctypes.CDLL, Path]:
    """Build (once) and load the library; one load per process and cache folder."""
    import torch  # noqa: F401  first: the library must find torch's libgomp already loaded

    path = build(cache_dir)
    lib = ctypes.CDLL(str(path))
    declare(lib)
    return lib, path


def use(native: NativeBuild):
    """Load the native kernels for this process's training (building them once into
    ``native.cache_dir``), or turn them off; returns the library or None (see :func:`status`)."""
    if not native.enabled:
        _state.update(lib=None, loaded=False, why=TURNED_OFF)
        return None
    if platform.system() != "Linux":
        _state.update(lib=None, loaded=False, why=f"not built on {platform.system()}")
        return None
    try:
        lib, path = _load(Path(native.cache_dir))
    except (OSError, RuntimeError, AttributeError) as exc:
        _state.update(lib=None, loaded=False, why=str(exc))
        return None
    _state.update(lib=lib, loaded=True, why=str(path))
    return lib


def kernels():
    """The library :func:`use` loaded, or None: the one place the kernel modules ask."""
    return _state["lib"]


def status() -> dict:
    """``{"loaded": bool, "why": the library's path, or why it is not loaded}``."""
    return {"loaded": _state["loaded"], "why": _state["why"]}


def dropout_threshold(p: float) -> int:
    """``p`` as the 32-bit threshold the kernels compare hashes against."""
    return min(2**32 - 1, max(0, round(p * 2**32)))


def ptr(tensor):
    """The tensor's data address for a C call (None: a NULL pointer)."""
    return None if tensor is None else ctypes.c_void_p(tensor.data_ptr())
