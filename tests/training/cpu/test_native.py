"""The native CPU kernels (backend/training/cpu/native.py + kernels.c): built with the
machine's C compiler, cached, turned on and off by the settings, and equal to the torch
formulas they replace."""

from __future__ import annotations

import ctypes
import shutil

import pytest

torch = pytest.importorskip("torch")

from backend.settings import Settings  # noqa: E402
from backend.training.cpu import native  # noqa: E402
from backend.training.cpu.dropout import draw_seed  # noqa: E402
from backend.training.cpu.native import NativeBuild  # noqa: E402

needs_compiler = pytest.mark.skipif(native._compiler() is None, reason="no C compiler on this machine")


def ptr(tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(tensor.data_ptr())


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    path = native.build(tmp_path_factory.mktemp("native"))
    loaded = ctypes.CDLL(str(path))
    native.declare(loaded)
    return loaded


@needs_compiler
def test_build_compiles_once_per_source_and_caches(tmp_path):
    first = native.build(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert first.is_file() and first.parent.parent == tmp_path
    assert native.build(tmp_path) == first and first.stat().st_mtime_ns == stamp  # not rebuilt


@needs_compiler
def test_a_build_without_avx512_has_no_lora_products_and_still_loads(tmp_path, monkeypatch):
    """The portable build (here: baseline x86-64 flags) declares and runs everything but
    the AVX-512 LoRA products, which it reports absent (torch's products run instead)."""
    import platform

    if platform.machine() != "x86_64":
        pytest.skip("the flags below are for x86-64")
    monkeypatch.setattr(native, "FLAGS", [f if f != "-march=native" else "-march=x86-64" for f in native.FLAGS])
    portable = ctypes.CDLL(str(native.build(tmp_path)))
    native.declare(portable)
    assert portable.tl_lora_vectorized() == 0 and not hasattr(portable, "tl_lora_rows")
    x, out = torch.randn(3, 40).bfloat16(), torch.empty(3, 40, dtype=torch.bfloat16)
    portable.tl_dropout_copy(ptr(x), x.numel(), 5, 0, ptr(out))
    assert torch.equal(out, x)


def test_build_without_a_working_compiler_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", shutil.which("false") or "/bin/false")
    with pytest.raises(RuntimeError, match="failed"):
        native.build(tmp_path)
    assert not list(tmp_path.rglob("*.so"))  # no half-written library left behind


def test_the_settings_say_whether_and_where_they_are_built(home, monkeypatch):
    assert NativeBuild.from_settings(Settings(home=home)) == NativeBuild(True, home / ".tunelab" / "native")
    monkeypatch.setenv("TUNELAB_NATIVE_KERNELS", "false")
    assert NativeBuild.from_settings(Settings()).enabled is False


def test_kernels_can_be_turned_off(native_build, tmp_path):
    try:
        assert native.use(NativeBuild(enabled=False, cache_dir=tmp_path)) is None
        assert native.kernels() is None
        assert native.status() == {"loaded": False, "why": native.TURNED_OFF}
        assert "TUNELAB_NATIVE_KERNELS=false" in native.TURNED_OFF
        assert not list(tmp_path.iterdir())  # nothing built
    finally:
        native.use(native_build)


@needs_compiler
def test_a_run_that_asks_for_them_gets_the_library_built_in_its_cache(native_build):
    lib = native.use(native_build)
    assert lib is not None and native.kernels() is lib
    assert native.status()["loaded"] and native.status()["why"].startswith(str(native_build.cache_dir))
    assert native.use(native_build) is lib  # loaded once per process


def test_dropout_threshold_and_seed():
    assert native.dropout_threshold(0.0) == 0 and native.dropout_threshold(1.0) == 2**32 - 1
    assert native.dropout_threshold(0.25) == 2**30
    torch.manual_seed(3)
    first = draw_seed()
    torch.manual_seed(3)
    assert draw_seed() == first  # torch's generator state reproduces the masks
    assert 0 <= first < 2**64


@needs_compiler
def test_dropout_mask_is_bernoulli_p_and_seeded(lib):
    n = 1 << 20
    masks = {}
    for seed in (1, 2, 1 << 40):
        for p in (0.05, 0.5):
            mask = torch.empty(n, dtype=torch.uint8)
            lib.tl_dropout_mask(n, seed, native.dropout_threshold(p), ptr(mask))
            rate = 1 - mask.double().mean().item()
            assert abs(rate - p) < 5 * (p * (1 - p) / n) ** 0.5, (seed, p, rate)
            masks[seed, p] = mask
    m = masks[1, 0.5].double()
    assert abs(torch.corrcoef(torch.stack([m[:-1], m[1:]]))[0, 1].item()) < 0.01  # neighbours independent
    assert not torch.equal(masks[1, 0.5], masks[2, 0.5]) and not torch.equal(masks[1, 0.5], masks[1 << 40, 0.5])
    again = torch.empty(n, dtype=torch.uint8)
    lib.tl_dropout_mask(n, 2, native.dropout_threshold(0.5), ptr(again))
    assert torch.equal(again, masks[2, 0.5])
    lib.tl_dropout_mask(n, 2, 0, ptr(again))
    assert bool(again.all())  # p = 0 drops nothing


def _kept(lib, shape, seed, threshold):
    mask = torch.empty(shape[0] * shape[1], dtype=torch.uint8)
    lib.tl_dropout_mask(mask.numel(), seed, threshold, ptr(mask))
    return mask.view(shape).bool()


@needs_compiler
def test_dropout_copy_and_add_kept_follow_the_mask(lib):
    x, lora, acc = (torch.randn(37, 53).bfloat16() for _ in range(3))
    seed, threshold = 99, native.dropout_threshold(0.3)
    keep = _kept(lib, x.shape, seed, threshold)
    out = torch.empty_like(x)
    lib.tl_dropout_copy(ptr(x), x.numel(), seed, threshold, ptr(out))
    assert torch.equal(out, torch.where(keep, x, torch.zeros_like(x)))
    want = (acc.float() + torch.where(keep, lora.float(), 0.0)).bfloat16()
    lib.tl_add_kept(ptr(acc), ptr(lora), x.numel(), seed, threshold)
    assert torch.equal(acc, want)


def _packed(keep):
    """A [M, K] bool mask as the LoRA kernels keep it: 16 bits per int16, bit k % 16."""
    rows, width = keep.shape
    padded = torch.zeros(rows, (width + 15) // 16 * 16, dtype=torch.int32)
    padded[:, :width] = keep.int()
    words = (padded.view(rows, -1, 16) << torch.arange(16, dtype=torch.int32)).sum(-1)
    return words.to(torch.int16)  # wraps to the same 16 bits


lora_shapes = pytest.mark.parametrize("rows,width,rank", [(37, 53, 3), (64, 576, 8), (5, 40, 12), (1, 16, 8)])


@needs_compiler
@lora_shapes
def test_lora_rows_is_the_down_projection_on_the_kept_input_and_keeps_the_mask(lib, rows, width, rank):
    if not lib.tl_lora_vectorized():
        pytest.skip("not an AVX-512 build: no LoRA products")
    gen = torch.Generator().manual_seed(rows)
    x, w = torch.randn(rows, width, generator=gen).bfloat16(), torch.randn(rank, width, generator=gen)
    seed, threshold = 1234567890123, native.dropout_threshold(0.3)
    keep = _kept(lib, (rows, width), seed, threshold)
    out, bits = torch.empty(rows, rank), torch.zeros(rows, (width + 15) // 16, dtype=torch.int16)
    lib.tl_lora_rows(ptr(x), rows, width, ptr(w), rank, seed, threshold, 1.5, ptr(out), ptr(bits))
    want = 1.5 * (x.float() * keep) @ w.t()
    assert torch.allclose(out, want, rtol=1e-5, atol=1e-4)
    assert torch.equal(bits, _packed(keep))  # the forward's mask, for the backward
    lib.tl_lora_rows(ptr(x), rows, width, ptr(w), rank, seed, 0, 1.0, ptr(out), None)  # threshold 0: no dropout
    assert torch.allclose(out, x.float() @ w.t(), rtol=1e-5, atol=1e-4)


@needs_compiler
@lora_shapes
def test_lora_cols_and_add_follow_the_kept_bits(lib, rows, width, rank):
    if not lib.tl_lora_vectorized():
        pytest.skip("not an AVX-512 build: no LoRA products")
    gen = torch.Generator().manual_seed(rows + 1)
    y, n, w = torch.randn(rows, width, generator=gen).bfloat16(), torch.randn(rows, rank, generator=gen), \
        torch.randn(rank, width, generator=gen)
    keep = _kept(lib, (rows, width), 77, native.dropout_threshold(0.4))
    for bits, kept in ((_packed(keep), keep), (None, torch.ones_like(keep))):
        out = torch.full((rank, width), float("nan"))
        lib.tl_lora_cols(ptr(n), ptr(y), rows, width, rank, None if bits is None else ptr(bits), ptr(out))
        assert torch.allclose(out, n.t() @ (y.float() * kept), rtol=1e-5, atol=1e-4)  # every element written
        acc = torch.randn(rows, width, generator=gen).bfloat16()
        want = acc.float() + (n @ w) * kept
        lib.tl_lora_add(ptr(acc), rows, width, ptr(n), ptr(w), rank, None if bits is None else ptr(bits))
        assert torch.allclose(acc.float(), want, rtol=1 / 128, atol=1e-3)  # rounded once, to bf16


@needs_compiler
def test_softmax_xent_is_cross_entropy_and_its_gradient(lib):
    rows, vocab = 9, 1000
    logits = (torch.randn(rows, vocab) * 4).bfloat16()
    logits[2, 7] = -float("inf")  # a masked-out logit stays probability 0
    targets = torch.randint(0, vocab, (rows,))
    targets[4] = -100  # outside the vocabulary: loss 0, gradient 0
    log_probs = torch.log_softmax(logits.float(), -1)
    valid = targets >= 0
    want_loss = torch.where(valid, -log_probs.gather(1, targets.clamp(min=0)[:, None])[:, 0], 0.0)
    want_grad = log_probs.exp()
    want_grad[valid, targets[valid]] -= 1
    want_grad[~valid] = 0
    grad, losses = logits.clone(), torch.empty(rows)
    lib.tl_softmax_xent(ptr(grad), ptr(targets), rows, vocab, ptr(losses))
    assert torch.allclose(losses, want_loss, rtol=1e-5, atol=1e-5)
    assert torch.allclose(grad.float(), want_grad.bfloat16().float(), rtol=0, atol=1e-6 + 2 ** -8 * want_grad.abs().max())
    assert grad[2, 7] == 0 and bool((grad[4] == 0).all())
    assert torch.allclose(grad.float().sum(-1)[valid], torch.zeros(int(valid.sum())), atol=0.02)
