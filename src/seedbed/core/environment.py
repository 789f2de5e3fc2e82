"""What a run ran on: hardware, software, the variables that change results, and the code.

`write_environment(run_dir)` writes three files beside run.json:

- `environment.json`: Python, OS and kernel, CPU, torch build, GPUs, thread
  counts, every installed package, an allow-list of environment variables and
  the git state of the code;
- `requirements.txt`: the installed packages, as `pip freeze` writes them;
- `code.patch`: the uncommitted changes (`git apply` it on the recorded commit), and
  the untracked files that may be copied (`seedbed.core.code_patch`).

Only the variables named in `ENV_VARS` are read: the rest of the environment
(tokens, keys, passwords) never reaches a run file. Every part is best-effort:
a field that cannot be read says why instead of failing the run. It runs on
every start, so it stays fast (tens of milliseconds: no `pip`, short git calls).
"""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from seedbed.core.code_patch import PATCH_FILE, code_state
from seedbed.core.record import read_json

ENVIRONMENT_FILE = "environment.json"
REQUIREMENTS_FILE = "requirements.txt"

# The variables that can change results or what runs where, and why. Nothing else is read.
ENV_VARS: dict[str, str] = {
    "PYTHONHASHSEED": "str/bytes hash order, and so set iteration order",
    "CUBLAS_WORKSPACE_CONFIG": "deterministic cuBLAS needs :4096:8 or :16:8",
    "CUDA_VISIBLE_DEVICES": "which GPUs the run sees",
    "CUDA_DEVICE_ORDER": "how GPU indices map to devices",
    "CUDA_LAUNCH_BLOCKING": "synchronous kernels (debugging)",
    "NVIDIA_TF32_OVERRIDE": "0 forbids TF32 whatever torch asks",
    "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": "forces TF32 matmuls on",
    "PYTORCH_CUDA_ALLOC_CONF": "allocator settings",
    "OMP_NUM_THREADS": "CPU threads: reduction order of some kernels",
    "MKL_NUM_THREADS": "MKL threads",
    "OPENBLAS_NUM_THREADS": "OpenBLAS threads",
    "MKL_CBWR": "MKL conditional numerical reproducibility (code path per CPU)",
    "KMP_AFFINITY": "OpenMP thread placement",
    "KMP_DETERMINISTIC_REDUCTION": "OpenMP reduction order",
    "NCCL_ALGO": "collective algorithm: reduction order across GPUs",
    "NCCL_PROTO": "collective protocol",
    "WORLD_SIZE": "processes in a distributed run",
    "LOCAL_WORLD_SIZE": "processes per node",
}


def python_info() -> dict[str, Any]:
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "compiler": platform.python_compiler(),
    }


def os_info() -> dict[str, Any]:
    uname = platform.uname()
    libc = platform.libc_ver()
    return {
        "system": uname.system,
        "kernel": uname.release,
        "version": uname.version,
        "machine": uname.machine,
        "platform": platform.platform(),
        "libc": " ".join(part for part in libc if part) or None,
    }


def cpu_info() -> dict[str, Any]:
    """Model and core counts: the model decides which SIMD code paths (and roundings) run."""
    model, physical = None, set()
    try:
        core = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name" and model is None:
                model = value
            elif key in ("physical id", "core id"):
                core[key] = value
                if len(core) == 2:
                    physical.add((core["physical id"], core["core id"]))
                    core = {}
    except OSError:
        pass  # not Linux: platform.processor() below is the best there is
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "model": model or platform.processor() or None,
        "logical_cores": os.cpu_count(),
        "physical_cores": len(physical) or None,
        "usable_cores": usable,
    }


def torch_info() -> dict[str, Any]:
    cudnn = torch.backends.cudnn
    return {
        "version": torch.__version__,
        "git_version": torch.version.git_version,
        "debug": torch.version.debug,
        "cuda": torch.version.cuda,
        "cudnn": cudnn.version() if cudnn.is_available() else None,
        "hip": torch.version.hip,
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "openmp": torch.backends.openmp.is_available(),
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
        "build_config": torch.__config__.show(),
    }


def nvidia_driver() -> str | None:
    """The kernel driver version, read from /proc: no nvidia-smi process on the startup path."""
    try:
        first = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    words = first.split()
    return next((w for w in words if w[:1].isdigit() and "." in w), first)


def gpu_info() -> list[dict[str, Any]]:
    """One entry per visible device. Call after set_determinism: this initialises CUDA."""
    if not torch.cuda.is_available():
        return []
    driver = nvidia_driver()
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(
            {
                "index": index,
                "name": props.name,
                "compute_capability": f"{props.major}.{props.minor}",
                "sm_count": props.multi_processor_count,
                "memory_bytes": props.total_memory,
                "driver": driver,
            }
        )
    return gpus


def installed_packages() -> tuple[dict[str, str], set[str]]:
    """Every distribution on sys.path (name -> version, sorted like `pip freeze`), and the
    names of those installed with `pip install -e`: their code is recorded by git instead."""
    found: dict[str, str] = {}
    editable: set[str] = set()
    seen: set[str] = set()
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name or name.lower() in seen:
            continue  # a shadowed copy further down sys.path is not the one imported
        seen.add(name.lower())
        found[name] = dist.version
        direct = dist.read_text("direct_url.json")
        if direct and json.loads(direct).get("dir_info", {}).get("editable"):
            editable.add(name)
    return dict(sorted(found.items(), key=lambda item: item[0].lower())), editable


def requirements_text(packages: dict[str, str], editable: set[str]) -> str:
    """`pip freeze` format; an editable install becomes a comment (its path is this machine's)."""
    lines = []
    for name, version in packages.items():
        if name in editable:
            lines.append(f"# {name}=={version} is an editable install: see git in environment.json")
        else:
            lines.append(f"{name}=={version}")
    return "\n".join(lines) + "\n"


def environment_variables() -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in ENV_VARS}


def capture_environment(code_dir: Path | None = None) -> tuple[dict[str, Any], str, str]:
    """(environment.json's content, requirements.txt, code.patch) for this process."""
    code_dir = code_dir or Path(__file__).resolve().parent
    packages, editable = installed_packages()
    git, patch = code_state(code_dir)
    environment = {
        "python": python_info(),
        "os": os_info(),
        "cpu": cpu_info(),
        "torch": torch_info(),
        "gpus": gpu_info(),
        "env": environment_variables(),
        "git": git,
        "packages": packages,
        "requirements": REQUIREMENTS_FILE,
    }
    return environment, requirements_text(packages, editable), patch


def write_environment(run_dir: str | Path, code_dir: Path | None = None) -> dict[str, Any]:
    """Write environment.json, requirements.txt and (when the code is dirty) code.patch."""
    run_dir = Path(run_dir)
    environment, requirements, patch = capture_environment(code_dir)
    (run_dir / ENVIRONMENT_FILE).write_text(json.dumps(environment, indent=2) + "\n")
    (run_dir / REQUIREMENTS_FILE).write_text(requirements)
    if patch:
        (run_dir / PATCH_FILE).write_text(patch)
    return environment


def read_environment(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / ENVIRONMENT_FILE
    return read_json(path) if path.exists() else {}


if __name__ == "__main__":  # `python -m seedbed.core.environment`: what a run here would record
    print(json.dumps(capture_environment()[0], indent=2))
