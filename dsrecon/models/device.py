"""The compute device of a fit or a free run: auto|cpu|cuda[:i] as a torch device string."""

from __future__ import annotations

import torch

from dsrecon.errors import OptionError


def resolve_device(device: str) -> str:
    """Map auto|cpu|cuda[:i] to a torch device string, with a clear error for unavailable CUDA."""
    d = str(device).lower()
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d == "cpu":
        return "cpu"
    if d.startswith("cuda"):
        from dsrecon.models.backends import plrnn_cuda

        if plrnn_cuda.simulating():  # tests without a GPU: CPU tensors, the CUDA kernels on numba's simulator
            return "cpu"
        if not torch.cuda.is_available():
            raise OptionError("`device` cuda: no CUDA device is available (use `device` cpu or auto)")
        return d
    raise OptionError(f"`device`: unknown device '{device}' (choose auto, cpu or cuda)")
