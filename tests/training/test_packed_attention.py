"""Padding-free rows attended example by example (backend/training/packed_attention.py): the
same outputs and gradients as SDPA under the block-diagonal mask transformers builds, no mask
for a packed row, transformers' own mask and path for everything else, and a real tiny run
that trains the same losses as padded batches. The varlen kernel it uses on CUDA is checked
against the per-example path in tests/training/test_gpu_training.py."""

from __future__ import annotations

import pytest
import torch

from backend.training import packed_attention
from backend.training.packed_attention import NAME, boundaries, packed_attention as attend, packed_mask
from tests.builders import assert_same_forward_and_backward


class Module(torch.nn.Module):  # what transformers' attention functions read off the layer
    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups, self.is_causal = groups, True


def _qkv(lengths, heads=4, kv_heads=2, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    q = torch.randn(1, heads, total, dim, generator=g, requires_grad=True)
    k = torch.randn(1, kv_heads, total, dim, generator=g, requires_grad=True)
    v = torch.randn(1, kv_heads, total, dim, generator=g, requires_grad=True)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return q, k, v, cu


def _block_diagonal_reference(q, k, v, cu, scale):
    """What transformers' sdpa does with a packed row: one SDPA call under the T x T mask."""
    total, groups = q.shape[2], q.shape[1] // k.shape[1]
    example = torch.repeat_interleave(torch.arange(len(cu) - 1), cu.diff().long())
    allowed = (example[:, None] == example[None, :]) & torch.ones(total, total, dtype=torch.bool).tril()
    out = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1), attn_mask=allowed, scale=scale)
    return out.transpose(1, 2)


def test_a_packed_row_attends_within_each_example_as_the_masked_reference_does():
    lengths = [5, 1, 9, 3]
    q, k, v, cu = _qkv(lengths)
    out, weights = attend(Module(2), q, k, v, None, scaling=0.3, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                          max_length_q=9, position_ids=torch.zeros(1, sum(lengths), dtype=torch.long))
    assert weights is None and out.shape == (1, sum(lengths), 4, 8)
    ref_inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ref = _block_diagonal_reference(*ref_inputs, cu, 0.3)
    assert_same_forward_and_backward(out, ref, (q, k, v), ref_inputs, tol=1e-5)
    # a token never sees another example: changing the first example leaves the others' outputs alone
    q2 = q.detach().clone()
    q2[:, :, :5] += 1.0
    k2, v2 = k.detach().clone(), v.detach().clone()
    k2[:, :, :5] -= 1.0
    out2, _ = attend(Module(2), q2, k2, v2, None, scaling=0.3, cu_seq_lens_q=cu, max_length_q=9)
    torch.testing.assert_close(out2[:, 5:], out.detach()[:, 5:])
    assert not torch.allclose(out2[:, :5], out.detach()[:, :5])


def test_anything_but_a_packed_row_takes_transformers_sdpa_path_unchanged():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q, k, v, cu = _qkv([6, 4])
    mask = torch.ones(10, 10, dtype=torch.bool).tril()[None, None]
    mask[..., 2] = False
    for attention_mask, extra in ((mask, {"cu_seq_lens_q": cu}), (None, {})):
        mine, _ = attend(Module(2), q, k, v, attention_mask, scaling=0.5, **extra)
        theirs, _ = sdpa_attention_forward(Module(2), q, k, v, attention_mask, scaling=0.5)
        torch.testing.assert_close(mine, theirs)
    one = torch.tensor([0, 10], dtype=torch.int32)  # one example: plain causal SDPA
    torch.testing.assert_close(attend(Module(2), q, k, v, None, cu_seq_lens_q=one)[0],
                               sdpa_attention_forward(Module(2), q, k, v, None)[0])


def test_only_a_packed_row_loses_its_mask():
    from transformers.masking_utils import causal_mask_function, sdpa_mask

    assert packed_mask(attention_mask=None, q_length=12, kv_length=12, q_offset=0, batch_size=1,
                       mask_function=causal_mask_function) is None
    padded = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    mine = packed_mask(attention_mask=padded, q_length=4, kv_length=4, q_offset=0, batch_size=2,
                       mask_function=causal_mask_function, allow_is_causal_skip=True)
    theirs = sdpa_mask(attention_mask=padded, q_length=4, kv_length=4, q_offset=0, batch_size=2,
                       mask_function=causal_mask_function, allow_is_causal_skip=True)
    assert mine is not None and torch.equal(mine, theirs)


def test_the_host_copy_of_the_boundaries_is_read_once_per_step():
    cu = torch.tensor([0, 3, 7], dtype=torch.int32)
    assert boundaries(cu) == [0, 3, 7]
    cu[1] = 4  # a second read (the next layer) uses the copy kept on the tensor
    assert boundaries(cu) == [0, 3, 7]
    assert boundaries(torch.tensor([0, 4, 7])) == [0, 4, 7]


def test_registering_makes_the_name_loadable_and_a_tiny_model_packed_matches_padded(tiny_llama):
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    assert packed_attention.register() == NAME
    packed = AutoModelForCausalLM.from_pretrained(tiny_llama, attn_implementation=NAME, dtype=torch.float32)
    plain = AutoModelForCausalLM.from_pretrained(tiny_llama, attn_implementation="sdpa", dtype=torch.float32)
    assert packed.config._attn_implementation == NAME
    rows = [{"input_ids": list(range(3, 3 + n)), "labels": [-100] * (n // 2) + list(range(3 + n // 2, 3 + n))}
            for n in (7, 12, 4)]  # answer-only labels: the second half of each example
    flat = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
    padded = DataCollatorForLanguageModeling(pad_token_id=0)(rows)
    assert "cu_seq_lens_q" in flat and flat["input_ids"].shape[0] == 1
    with torch.no_grad():  # use_cache=False as in training: with a cache transformers sees no packed row
        loss_flat = packed(**flat, use_cache=False).loss
        loss_padded = plain(**padded, use_cache=False).loss
        loss_masked = plain(**flat, use_cache=False).loss  # transformers' sdpa with its T x T mask
    assert float(loss_flat) == pytest.approx(float(loss_padded), rel=1e-5)
    assert float(loss_flat) == pytest.approx(float(loss_masked), rel=1e-5)


def test_the_varlen_call_lays_out_a_row_as_the_kernel_expects(monkeypatch):
    """The CUDA kernel cannot run here, so a reference with its signature stands in for it (the
    form of torch 2.11, without enable_gqa: the shared heads are repeated first): the layout
    conversions and the causal window give what the per-example path gives. The kernel itself
    is checked on a GPU (test_gpu_training.py)."""
    import torch.nn.attention.varlen as varlen_module

    calls = []

    def kernel(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1)):
        calls.append((query.shape, key.shape, window_size, max_q))
        assert window_size == (-1, 0) and torch.equal(cu_seq_q, cu_seq_k) and query.shape[1] == key.shape[1]
        cut = cu_seq_q.tolist()
        return torch.cat([torch.nn.functional.scaled_dot_product_attention(
            query[a:b].transpose(0, 1), key[a:b].transpose(0, 1), value[a:b].transpose(0, 1), is_causal=True,
            scale=scale).transpose(0, 1) for a, b in zip(cut, cut[1:])])

    monkeypatch.setattr(varlen_module, "varlen_attn", kernel)
    varlen = packed_attention._varlen.__wrapped__()  # the lookup itself, not the process's cached one
    assert varlen is not kernel  # no enable_gqa: wrapped to repeat the shared heads
    q, k, v, cu = _qkv([4, 7, 2])
    out = packed_attention.varlen_row(varlen, q, k, v, cu, 7, 0.3)
    ref = packed_attention._per_example(Module(2), q, k, v, cu.tolist(), 0.0, 0.3, {})
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert calls == [(torch.Size([13, 4, 8]), torch.Size([13, 4, 8]), (-1, 0), 7)]


def test_the_gpu_recipe_trains_on_the_cpu_with_the_losses_of_a_padded_run(tiny_llama, tmp_path, monkeypatch):
    """The whole training loop of a GPU recipe (TRL's padding-free rows, :data:`NAME`
    attention, non-reentrant activation checkpointing, none of the CPU machinery) run on
    the CPU in fp32 against the same run with padded batches: every step's loss is the same,
    so the GPU path differs from the tested CPU path only in its device. bench/gpu_rehearsal.sh
    runs this with transformers 5.17, the GPU image's own."""
    from backend.hparams import RunSpec
    from backend.training.recipe import Recipe
    from backend.training.run import train_adapter
    from tests.builders import folder_ref, write_color_data

    data = write_color_data(tmp_path / "data", n=12)
    spec = RunSpec(name="x", base=str(tiny_llama), goal="say the color", lora={"dropout": 0.0},
                   train={"epochs": 2, "batch_size": 4, "max_length": 64, "learning_rate": 5e-3,
                          "neftune_noise_alpha": None, "eval_fraction": 0.0, "early_stopping": False})
    fields = dict(device="cpu", precision="fp32", per_device_batch=2, accumulation=2, cpu_machinery=False,
                  quantize=None, processes=1)
    gpu_like = Recipe(attention=NAME, padding_free=True, gradient_checkpointing=True, **fields)
    padded = Recipe(attention="sdpa", padding_free=False, gradient_checkpointing=False, **fields)
    attended, per_example = [], packed_attention._per_example  # the rows that came packed: examples in each
    monkeypatch.setattr(packed_attention, "_per_example",
                        lambda module, q, k, v, bounds, *rest: attended.append(len(bounds) - 1)
                        or per_example(module, q, k, v, bounds, *rest))
    runs = {}
    for name, recipe in (("packed", gpu_like), ("padded", padded)):
        meta = train_adapter(spec.model_copy(update={"name": name}), base_ref=folder_ref(tiny_llama),
                             train_file=data, eval_file=None, out_dir=tmp_path / "adapters" / name,
                             work_dir=tmp_path / f"work-{name}", recipe=recipe)
        runs[name] = [h["loss"] for h in meta["loss_history"] if h.get("loss") is not None]
        assert meta["metrics"]["recipe"]["padding_free"] == recipe.padding_free
        if name == "packed":  # two examples end to end in each row, through every layer
            assert attended and set(attended) == {2}
            attended.clear()
    assert not attended  # padded batches keep transformers' own SDPA
    assert len(runs["packed"]) == len(runs["padded"]) >= 4
    assert runs["packed"] == pytest.approx(runs["padded"], rel=1e-4)
    assert runs["packed"][-1] < runs["packed"][0]
