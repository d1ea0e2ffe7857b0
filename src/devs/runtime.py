"""Process-level helpers: devices, seeds, atomic writes, peak memory, the software environment."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import torch

from .errors import InvalidParameterError, OutputError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an explicit device must be available."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = device.split(":")[0]
    if kind not in DEVICE_CHOICES:
        raise InvalidParameterError(
            f"Unknown device {device!r}. Valid: {', '.join(DEVICE_CHOICES)} (optionally cuda:N)."
        )
    if kind == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError("--device cuda was asked for but CUDA is not available; use --device cpu or auto.")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InvalidParameterError("--device mps was asked for but MPS is not available; use --device cpu or auto.")
    return torch.device(device)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A local torch generator; devs never seeds or draws from the global RNG."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator


@contextlib.contextmanager
def isolated_rng(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Run code that draws from torch's global RNG under a fixed seed, without leaking into the caller.

    torch.nn layers draw initial weights and dropout masks from the global generator; fork_rng
    restores its state afterwards, so building and training a net is reproducible and side-effect free.
    """
    cuda_devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(int(seed))
        yield


def check_writable(path: str | Path) -> Path:
    """Fail early, before any long computation, if ``path`` cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.exists() and path.is_dir():
        raise OutputError(f"Output path {path} is a directory; give a file name such as {path / 'distilled.safetensors'}.")
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"Output directory {parent} is a file, not a directory; choose a writable --out path.")
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"Cannot create output directory {parent}: {error.strerror}; choose a writable --out path.") from None
    if not os.access(parent, os.W_OK):
        raise OutputError(f"Output directory {parent} is not writable; choose a writable --out path.")
    return path


def _umask() -> int:
    """The process's umask. Linux states it in /proc (read without touching it); elsewhere os.umask must
    set a value to return the old one, so a private one is set for that instant and the old one put back."""
    try:
        with open("/proc/self/status", encoding="utf-8", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def apply_default_mode(path: str | Path) -> None:
    """Give ``path`` the mode a plain open() or mkdir() would have under the current umask.

    Atomic writes build their output in a temporary file (mkstemp: 0o600) or folder (mkdtemp: 0o700);
    called before the rename, this lets others read the result as far as the user's umask allows.
    """
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it into place.

    A crash or an exception leaves the destination untouched and removes the temporary file,
    so readers see either the old file or the complete new one, never a half-written file.
    """
    path = Path(path)
    try:
        descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise OutputError(f"Cannot write to {path.parent}: {error.strerror}; choose a writable output path.") from None
    os.close(descriptor)
    temp_path = Path(temp_name)
    try:
        yield temp_path
        apply_default_mode(temp_path)
        os.replace(temp_path, path)
    finally:
        if temp_path.exists():
            temp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as temp_path:
        temp_path.write_text(text, encoding="utf-8")


def peak_memory_mib() -> float:
    """Peak resident memory of this process so far, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024


def cuda_peak_memory_mib() -> float | None:
    """Peak GPU memory allocated by this process's tensors, in MiB; None without CUDA."""
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # the CPU features that change training speed


def _cpuinfo_field(name: str) -> str:
    """The first ``name`` line of /proc/cpuinfo ("" where there is none, e.g. off Linux)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.split(":", 1)[0].strip() == name), "")


def cpu_flags() -> set[str]:
    return set(_cpuinfo_field("flags").split())


def cpu_description() -> str:
    """The CPU's model name and which of SPEED_FLAGS it has, from /proc/cpuinfo ("" where unreadable)."""
    model, flags = _cpuinfo_field("model name"), cpu_flags()
    present = [flag for flag in SPEED_FLAGS if flag in flags]
    return f"{model} ({', '.join(present) or 'none of ' + '/'.join(SPEED_FLAGS)})" if model else ""


def has_fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: a CUDA GPU that supports it, or a CPU with AVX-512
    BF16 or AMX (on other CPUs bf16 autocast is emulated, about 10x slower than fp32: BENCHMARKS "Speed")."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    return False


def environment() -> dict[str, str]:
    """Python, torch and the machine, as run records and reports state them."""
    from . import __version__

    info = {"devs": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs"}
    cpu = cpu_description()
    if cpu:
        info["cpu"] = cpu
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
