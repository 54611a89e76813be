"""Where a number was measured: device, library versions, CPU, commit. Never hostnames or secrets.

``collect(device)`` returns the ``env.json`` record of the results schema; ``device_tag`` turns it
into the folder name runs are grouped under (lowercase slug of device kind + name).

>>> slug("NVIDIA H100 80GB HBM3")
'nvidia-h100-80gb-hbm3'
>>> device_tag({"device_kind": "cpu", "device_name": "AMD EPYC 7B13"})
'cpu-amd-epyc-7b13'

torch is imported inside the functions, so importing this module touches nothing.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import BenchError

__all__ = [
    "DEVICES",
    "MACHINE_ENV",
    "DeviceError",
    "collect",
    "cpu_model",
    "device_tag",
    "git_info",
    "is_generic_cpu",
    "machine_name",
    "resolve_device",
    "slug",
    "synchronize",
]

#: Devices the harness runs on ("auto" picks cuda, then mps, then cpu).
DEVICES: tuple[str, ...] = ("cpu", "cuda", "mps")


class DeviceError(BenchError):
    """A device was asked for that is unknown or absent on this machine."""


def resolve_device(name: str) -> str:
    """``"auto"|"cpu"|"cuda"|"mps"`` -> a device present here; absent or unknown -> ``DeviceError``."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if name not in DEVICES:
        raise DeviceError(f"device {name!r} is not allowed: use auto, {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            "device 'cuda' was asked for but CUDA is not available here (torch "
            f"{torch.__version__}); use --device cpu or auto"
        )
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError(
            "device 'mps' was asked for but MPS is not available here; use --device cpu or auto"
        )
    return name


def synchronize(device: str) -> None:
    """Wait for the device's queued work (CUDA and MPS are asynchronous); read clocks after this."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def slug(text: str) -> str:
    """Lowercase, ``(R)``/``(TM)`` dropped, every other run of non-alphanumerics -> one ``-``."""
    t = re.sub(r"\((r|tm)\)", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", t).strip("-") or "unknown"


#: Environment variable naming this machine (``--machine NAME`` sets it for the runs it starts).
MACHINE_ENV = "TBPTT_BENCH_MACHINE"

#: CPU model strings that name no model: two different machines would share one results folder.
GENERIC_CPU = re.compile(
    r"^(?:intel(?:\(r\))? xeon(?:\(r\))?(?: cpu)?(?: processor)?|amd epyc(?: processor)?(?: \d+-core processor)?|"
    r"common kvm processor|qemu virtual cpu.*|virtual cpu|unknown|x86_64|aarch64|arm64|i386|)$",
    re.IGNORECASE,
)


def machine_name() -> str | None:
    """The machine name set by ``--machine`` / ``TBPTT_BENCH_MACHINE`` (None when unset or blank)."""
    name = os.environ.get(MACHINE_ENV, "").strip()
    return name or None


def is_generic_cpu(name: str) -> bool:
    """True for brand strings such as 'Intel(R) Xeon(R) Processor' or 'AMD EPYC' (no model number).

    >>> is_generic_cpu("Intel(R) Xeon(R) Processor"), is_generic_cpu("AMD EPYC 7B13")
    (True, False)
    """
    return bool(GENERIC_CPU.match(name.strip()))


def device_tag(env: dict[str, Any]) -> str:
    """The results folder for a device: ``<kind>-<name slug>``; a machine name replaces the device name.

    The machine comes from ``env["machine"]`` when the record has that key, else from
    ``TBPTT_BENCH_MACHINE`` (so planning and writing agree).

    >>> device_tag({"device_kind": "cpu", "device_name": "AMD EPYC", "machine": "lab-box 2"})
    'cpu-lab-box-2'
    """
    kind = env["device_kind"]
    machine = env["machine"] if "machine" in env else machine_name()
    if machine:
        name = slug(machine)
        return name if name.startswith(f"{kind}-") else f"{kind}-{name}"
    return f"{kind}-{slug(env['device_name'])}"


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else ``platform``'s best guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def git_info(where: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout holding this package; (None, None) when there is none.

    Dirty means tracked files outside ``results/`` differ from the commit: untracked files and the
    records and report a sweep writes (committed results regenerated by ``report``) do not count.
    ``TBPTT_BENCH_GIT_COMMIT`` names the commit of a copy without .git (dirty then unknown).
    """
    cwd = where or Path(__file__).resolve().parent
    if os.environ.get("TBPTT_BENCH_GIT_COMMIT"):  # a copy of the tree without .git (a lent GPU machine)
        return os.environ["TBPTT_BENCH_GIT_COMMIT"], None
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", ":(top,exclude)results"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
        )
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        return head.stdout.strip(), dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def _package_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("tbptt-bench")
    except PackageNotFoundError:
        from .. import __version__

        return __version__


def device_name(device: str) -> str:
    """Human name of the device: the GPU's name on cuda, the CPU model on cpu."""
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(torch.cuda.current_device())
    if device == "mps":
        return f"Apple MPS ({cpu_model()})"
    return cpu_model()


def collect(device: str) -> dict[str, Any]:
    """The ``env.json`` record for runs on ``device`` (one of ``DEVICES``).

    Keys: device_kind, device_name, torch_version, cuda_version (None unless cuda),
    cudnn_version, cpu_model, cpu_threads (torch intra-op threads), python_version, platform,
    package_version, git_commit, git_dirty; and machine (``--machine`` name or None), cpu_cores,
    ram_bytes, gpu_name, gpu_driver (cuda only), blas, mkl_available, torch_config (build settings).
    """
    import torch

    commit, dirty = git_info()
    on_cuda = device == "cuda"
    gpu_name, gpu_driver = _gpu() if on_cuda else (None, None)
    return {
        "device_kind": device,
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda if on_cuda else None,
        "cudnn_version": torch.backends.cudnn.version() if on_cuda else None,
        "cpu_model": cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "package_version": _package_version(),
        "git_commit": commit,
        "git_dirty": dirty,
        "machine": machine_name(),
        "cpu_cores": os.cpu_count(),
        "ram_bytes": _ram_bytes(),
        "gpu_name": gpu_name,
        "gpu_driver": gpu_driver,
        "blas": _blas(),
        "mkl_available": bool(torch.backends.mkl.is_available()),
        "torch_config": _torch_config(),
    }


def _ram_bytes() -> int | None:
    """Physical memory (Linux /proc/meminfo, else sysconf); None when the platform says nothing."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _gpu() -> tuple[str | None, str | None]:
    """(GPU name, driver version); the driver from nvidia-smi when it is there."""
    import torch

    name = torch.cuda.get_device_name(torch.cuda.current_device())
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        driver = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        driver = None
    return name, driver


def _torch_config() -> dict[str, str]:
    """torch's build settings (``torch.__config__.show()``'s ``Build settings: K=V, ...`` line)."""
    import torch

    text = torch.__config__.show()
    m = re.search(r"Build settings:\s*(.*)", text)
    out: dict[str, str] = {}
    if m:
        for part in re.split(r",\s*(?=[A-Z_]+=)", m.group(1)):
            if "=" in part:
                k, v = part.split("=", 1)
                out[k.strip()] = v.strip()
    return out


def _blas() -> str | None:
    """The BLAS torch was built with (e.g. 'mkl', 'open'), from its build settings."""
    cfg = _torch_config()
    return cfg.get("BLAS_INFO") or None
