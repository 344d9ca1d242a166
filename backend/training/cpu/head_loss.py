"""LM head + cross-entropy a block of rows at a time, with the gradient made in the forward pass.

The stock path projects every answer position onto the vocabulary at once and makes
several (answer tokens x vocabulary) fp32 arrays, each a fresh allocation of tens of MB.
:func:`head_loss_sum` runs a block of rows at a time against a oneDNN-packed copy of the
frozen head, and computes the gradient for the hidden states while the block's logits
exist (``(softmax - onehot) @ weight``, in one native pass over the logits for bf16), so
only one block's logits ever exist, in cache-sized, reused allocations.

A GPU run uses it too (plain torch products in larger blocks, no packing, no native pass):
there the point is memory, a block's logits instead of every answer position's
(:data:`backend.bases.memory.LOSS_BLOCK_ROWS`).
"""

from __future__ import annotations

import torch

from backend.hardware.prepack import available, pack_weight, packed_linear
from backend.training.cpu import native

PACKED_HEAD = "_tunelab_packed_head"  # attribute of the head weight that holds its packed copies


class HeadLossFunction(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T`` against ``targets`` for a frozen
    head ``weight``, a block of rows at a time, with the gradient for ``hidden``
    made during the forward pass."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, block_rows):
        need_grad = ctx.needs_input_grad[0]
        grad_hidden = torch.empty_like(hidden) if need_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        packed = packed_head(weight, block_rows)
        lib = native.kernels() if hidden.device.type == "cpu" and hidden.dtype is torch.bfloat16 else None
        if lib is not None:
            block_targets = targets.to(torch.int64).contiguous()
        for start in range(0, hidden.shape[0], block_rows):
            rows = slice(start, start + block_rows)
            # the activation dtype, as the stock head
            logits = hidden[rows] @ weight.t() if packed is None else packed_linear(hidden[rows], packed[0])
            if lib is not None:  # loss per row, and softmax - onehot over the logits, in one pass
                losses = torch.empty(logits.shape[0], dtype=torch.float32)
                lib.tl_softmax_xent(native.ptr(logits), native.ptr(block_targets[rows]),
                                    logits.shape[0], logits.shape[1], native.ptr(losses))
                total += losses.sum()
                if need_grad:
                    grad_hidden[rows] = logits @ weight if packed is None else packed_linear(logits, packed[1])
                del logits  # freed before the next block's are made: one block's logits at a time
                continue
            log_probs = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
            del logits  # (each del: one block's arrays alive at a time, not the last block's too)
            picked = targets[rows].unsqueeze(1)
            total -= log_probs.gather(1, picked).sum()
            if need_grad:
                log_probs.exp_()  # now softmax - onehot, in place
                log_probs.scatter_add_(1, picked, torch.full(picked.shape, -1.0, device=log_probs.device))
                if packed is None:
                    torch.mm(log_probs.to(hidden.dtype), weight, out=grad_hidden[rows])
                else:
                    grad_hidden[rows] = packed_linear(log_probs.to(hidden.dtype), packed[1])
            del log_probs
        ctx.save_for_backward(grad_hidden)
        return total

    @staticmethod
    def backward(ctx, grad):
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad.to(grad_hidden.dtype), None, None, None


def head_loss_sum(hidden, weight, targets, block_rows: int = 128):
    """``cross_entropy(hidden @ weight.T, targets, reduction="sum")`` in fp32 for a
    bias-free head (the LM head or tied embeddings of a LoRA run); the stock
    expression when the head itself is trained."""
    if weight.requires_grad:
        return torch.nn.functional.cross_entropy((hidden @ weight.t()).float(), targets, reduction="sum")
    return HeadLossFunction.apply(hidden.contiguous(), weight, targets, block_rows)


def packed_head(weight, block_rows: int):
    """oneDNN-packed copies of a frozen bf16 CPU head ``weight`` (vocabulary x hidden)
    and of its transpose, for the head's two products, made once and kept on the
    weight (remade if the weight is changed in place); None where packing does not
    apply. Unpacked, oneDNN reorders the whole head into its blocked layout on every
    call, a full read and write of it per block of rows."""
    if weight.dtype is not torch.bfloat16 or weight.device.type != "cpu" or weight.requires_grad or not available():
        return None
    cached = getattr(weight, PACKED_HEAD, None)
    if cached is not None and cached[0] == weight._version:
        return cached[1]
    with torch.no_grad():
        plain = weight.detach()
        packed = (pack_weight(plain, block_rows), pack_weight(plain.t().contiguous(), block_rows))
    setattr(weight, PACKED_HEAD, (weight._version, packed))
    return packed
