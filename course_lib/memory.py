"""How much GPU memory a training step needs, measured on any device (Colab's T4 has 16 GB).

Taught in ``05_progressive_training``; the tests run it on every full-mode size of the course,
so that a workshop on Colab's free T4 never runs out of memory. One step of training holds the
weights, their gradients, the optimiser's state (AdamW: two tensors per weight) and every
activation that autograd saves for the backward pass. :func:`training_memory` counts the
first three from the parameters and measures the last with
:func:`torch.autograd.graph.saved_tensors_hooks` during a real forward pass at the real batch
size, counting each saved storage once. It measures float32 (mixed precision saves about half
the activations), without the CUDA context and allocator slack, for which
:data:`T4_USABLE_BYTES` leaves room.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

#: A T4's 16 GB (15,360 MiB visible), less about 1.5 GiB for the CUDA context, cuDNN workspaces
#: and allocator fragmentation.
T4_USABLE_BYTES = 15_360 * 2**20 - 1536 * 2**20


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one training step needs, by kind."""

    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def __str__(self) -> str:
        gib = 2**30
        return (f"{self.total / gib:.2f} GiB (weights {self.weights / gib:.2f}, gradients {self.gradients / gib:.2f}, "
                f"AdamW state {self.optimizer / gib:.2f}, saved activations {self.activations / gib:.2f})")


def saved_activation_bytes(model: nn.Module, *inputs: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves for backward in ``model(*inputs)``, each storage once."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device.type != "meta":
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(*inputs)
    del out
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(size for ptr, size in seen.items() if ptr not in params)


def training_memory(model: nn.Module, *inputs: torch.Tensor, optimizer_states: int = 2) -> MemoryEstimate:
    """Memory of one training step of ``model`` on ``inputs`` (a full batch), in float32."""
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    weights += sum(b.numel() * b.element_size() for b in model.buffers())
    activations = saved_activation_bytes(model, *inputs)
    return MemoryEstimate(weights=weights, gradients=trainable, optimizer=optimizer_states * trainable,
                          activations=activations)
