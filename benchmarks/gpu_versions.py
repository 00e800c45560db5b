"""The GPU check's first step: the versions of torch, CUDA and every package the project uses, and the GPU's name."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

#: (import name, distribution name, minimum version or None, needed by): checked in step 1
PACKAGES = [
    ("torch", "torch", "2.4", "everything"),
    ("torchvision", "torchvision", "0.19", "image datasets"),
    ("numpy", "numpy", "1.24", "everything"),
    ("matplotlib", "matplotlib", "3.7", "run figures"),
    ("scipy", "scipy", "1.10", "metrics"),
    ("sklearn", "scikit-learn", "1.3", "the digits data"),
    ("seaborn", "seaborn", None, "notebook figures"),
    ("tqdm", "tqdm", "4.65", "progress bars"),
    ("torchmetrics", "torchmetrics", "1.4", "FID/KID"),
    ("pytest", "pytest", "7.4", "step 2"),
]
#: optional: missing is a skip with a line saying so, never a failure
OPTIONAL = [
    ("triton", "triton"),
    ("jax", "jax"),
    ("torchebm", "torchebm"),
    ("blackjax", "blackjax"),
    ("hypothesis", "hypothesis"),
    ("ipywidgets", "ipywidgets"),
    ("torch_fidelity", "torch-fidelity"),
]


# --------------------------------------------------------------------------- step 1: versions


def _version_of(module_name: str, dist_name: str) -> tuple[str | None, str | None]:
    """(version, why missing): found on the path (nothing imported: seconds saved), its distribution's version."""
    import importlib.util
    from importlib import metadata

    try:
        if importlib.util.find_spec(module_name) is None:
            return None, f"No module named {module_name!r}"
    # hidden by the dry run, or a broken install: "not usable here", with its reason
    except Exception as err:  # noqa: BLE001
        return None, f"{type(err).__name__}: {err}"
    try:
        return metadata.version(dist_name), None
    except metadata.PackageNotFoundError:  # on the path without metadata (a source checkout): ask the module itself
        try:
            return getattr(importlib.import_module(module_name), "__version__", "?"), None
        except Exception as err:  # noqa: BLE001
            return None, f"{type(err).__name__}: {err}"


def _at_least(version: str, minimum: str) -> bool:
    def parts(v):
        out = []
        for piece in v.split("+")[0].split(".")[:3]:
            digits = "".join(ch for ch in piece if ch.isdigit())
            out.append(int(digits) if digits else 0)
        return out + [0] * (3 - len(out))

    return parts(version) >= parts(minimum)


def _nvidia_smi() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        query = [exe, "--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv,noheader"]
        done = subprocess.run(query, capture_output=True, text=True, timeout=30)
        return done.stdout.strip() or done.stderr.strip() or None
    except (OSError, subprocess.SubprocessError) as err:
        return f"nvidia-smi failed: {err}"


def step_versions(ctx: dict) -> dict:
    import torch

    from timing import load_average

    cuda = torch.cuda.is_available()
    info = {
        "machine": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cuda_available": cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if cuda else None,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        "nvidia_smi": _nvidia_smi(),
        "date": ctx["date"],
        "load_avg": load_average(),
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
        "nccl": bool(torch.distributed.is_available() and torch.distributed.is_nccl_available()),
        # torch.compile's GPU kernels (Triton) build a small launcher with the host's C compiler: without one every
        # compile falls back
        "c_compiler": shutil.which("gcc") or shutil.which("cc") or shutil.which("clang"),
    }
    rows, problems = [], []
    for module, dist_name, minimum, why in PACKAGES:
        version, error = _version_of(module, dist_name)
        ok = version is not None and (minimum is None or _at_least(version, minimum))
        status = "ok" if ok else "MISSING" if version is None else "too old"
        rows.append({"package": dist_name, "version": version, "minimum": minimum, "status": status})
        if not ok:
            found = "missing" if version is None else version + " < " + minimum
            problems.append(f"{dist_name} {found} (needed by {why})")
    for module, dist_name in OPTIONAL:
        version, error = _version_of(module, dist_name)
        why_not = f"optional, not installed: what needs it is skipped ({(error or '')[:90]})"
        rows.append({"package": dist_name, "version": version, "minimum": None, "status": "ok" if version else why_not})
    info["packages"] = rows
    for k in (
        "machine",
        "python",
        "torch",
        "torch_cuda",
        "cudnn",
        "gpu",
        "gpu_capability",
        "gpu_memory_gib",
        "nvidia_smi",
        "bf16_supported",
        "nccl",
        "c_compiler",
    ):
        print(f"  {k:15s} {info[k]}")
    for r in rows:
        print(f"  {r['package']:15s} {r['version'] or '—':12s} {r['status']}")
    if problems:
        raise RuntimeError("; ".join(problems))
    return info


def _cpu_name() -> str:
    from anila_core.device import processor_name

    return processor_name()
