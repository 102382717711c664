"""Moving a method's working objects to ``Context.device`` and its result back.

The harness hands a method float64 CPU tensors and CPU operators, and expects a float64 CPU
analysis back (it records results with numpy and runs the model's forecasts on the CPU, so the
truth and the forecasts do not depend on the device). A method that computes on another device
moves what it needs with ``to_device`` and returns ``to_cpu(result, like=background)``.

Random draws stay on the CPU generator the Context gives (``torch.Generator`` is bound to one
device): draw there, then move, so a CPU and a CUDA run draw the same numbers.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from .covariance import BackgroundCovariance
from .observations import ObservationOperator, Observations

#: Objects whose tensor attributes ``to_device`` moves (in a shallow copy; the original stays put).
MOVABLE = (ObservationOperator, BackgroundCovariance, Observations)


def _module_on(module: torch.nn.Module, device: torch.device) -> bool:
    tensors = [*module.parameters(), *module.buffers()]
    return all(t.device == device for t in tensors)


def to_device(obj: Any, device: torch.device | str) -> Any:
    """``obj`` with every tensor it holds on ``device``: tensors, modules (copied unless already
    there), lists, tuples, dicts, and observation operators, covariances and Observations (a
    shallow copy with their tensor attributes moved, nested ones included). Anything else is
    returned as it is."""
    device = torch.device(device)
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, torch.nn.Module):
        return obj if _module_on(obj, device) else copy.deepcopy(obj).to(device)
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(item, device) for item in obj)
    if isinstance(obj, dict):
        return {key: to_device(value, device) for key, value in obj.items()}
    if isinstance(obj, MOVABLE):
        moved = copy.copy(obj)
        for name, value in vars(obj).items():
            setattr(moved, name, to_device(value, device))
        return moved
    return obj


def device_of(context) -> torch.device:
    """The device a method computes on: its Context's, or the CPU before ``prepare``."""
    return context.device if context is not None else torch.device("cpu")


def to_cpu(result: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The harness's side of the contract: ``result`` on the CPU with ``like``'s dtype."""
    return result.detach().to(device="cpu", dtype=like.dtype)
