"""Explicit device selection: "auto", "cuda", "mps" or "cpu", with a readable error for a missing backend."""

from __future__ import annotations

import torch

from .errors import PhenDiffError
from .options import DEVICES as DEVICE_CHOICES


def available_devices() -> list[str]:
    """Devices usable on this machine, best first."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    found.append("cpu")
    return found


def get_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve a device name; "auto" takes the best available (cuda > mps > cpu)."""
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        return torch.device(available_devices()[0])
    kind = name.split(":")[0]
    if kind not in DEVICE_CHOICES:
        raise PhenDiffError(f"Unknown device {device!r}: choose one of {', '.join(DEVICE_CHOICES)}.")
    if kind not in available_devices():
        raise PhenDiffError(
            f"Device {device!r} is not available on this machine (available: {', '.join(available_devices())}). "
            "Use device='auto' or install a PyTorch build with support for it."
        )
    return torch.device(name)
