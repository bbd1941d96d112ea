"""Explicit device selection: "auto", "cuda", "mps" or "cpu", with a readable error for a missing backend."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Iterator

import torch

from .errors import PhenDiffError
from .options import DEVICES as DEVICE_CHOICES
from .options import TranslateOptions


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


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively: an x86 CPU with AVX512-BF16 or AMX. There a translation in bf16
    ran 1.9-2.1x faster than in float32 with the same result on the simulator's truth (docs/benchmarks.md,
    precision and cpu_levers); on other CPUs bf16 is emulated and slower. GPUs: not measured, so not chosen."""
    if device.type != "cpu":
        return False
    # torch.cpu's own probes of the instruction sets (private names: no public API says it yet)
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def auto_precision(device: torch.device) -> str:
    """The network precision "auto" means on `device`: bf16 where it is native (see native_bf16), else fp32."""
    return "bf16" if native_bf16(device) else "fp32"


def settled_precision(options: TranslateOptions, device: torch.device) -> TranslateOptions:
    """The options with precision "auto" made the one it means on `device` (bf16 where the CPU computes it
    natively, else fp32: device.auto_precision), so what runs and what is recorded are the same."""
    if options.precision != "auto":
        return options
    return replace(options, precision=auto_precision(device))


@contextlib.contextmanager
def explain_memory_errors(device: str, advice: str) -> Iterator[None]:
    """Turn an out-of-memory error of the device into a PhenDiffError that says what to change (the CLI prints
    it in one line, a dock next to its controls)."""
    try:
        yield
    except RuntimeError as exc:  # torch.OutOfMemoryError is one
        if not is_out_of_memory(exc):
            raise
        raise PhenDiffError(f"Out of memory on {device}. {advice}") from exc


def is_out_of_memory(exc: BaseException) -> bool:
    """A device ran out of memory (CUDA's OutOfMemoryError, or the 'out of memory' RuntimeError of CPU and MPS)."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def available_memory(device: torch.device) -> int | None:
    """Bytes a run on `device` can still allocate: free GPU memory for CUDA; for the CPU, the system's available
    memory or what the process's control group (a container's, a job scheduler's limit) leaves, whichever is less.
    None where it cannot be told (MPS)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    found = []
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as limit, open("/sys/fs/cgroup/memory.current") as used:
            cap = limit.read().strip()
            if cap != "max":
                found.append(int(cap) - int(used.read().strip()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None
