"""On a CUDA machine: is the CNN config bit-identical on the GPU, and what does strict cost?

    bash scripts/gpu_check.sh [--out DIR] [--repeats N] [extra train.py overrides ...]

1. Records the GPU, driver, CUDA and cuDNN versions.
2. Runs the CNN config (`experiment=cnn_images`, augmentation on, DataLoader
   workers) with `determinism=strict` twice and compares the weights SHA-256
   and the loss-series SHA-256 of the two runs.
3. Times `determinism=strict` against `off` on the same config (augmentation
   off, so the GPU is the bottleneck), interleaved, from each run's
   `fit_seconds`.

Prints a table, writes `gpu_check.json` into --out, and exits 0 only when the
two strict runs are bit-identical.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# Large enough that the GPU, not Python, sets the pace; small enough to finish in minutes.
WORKLOAD = [
    "experiment=cnn_images",
    "trainer.device=cuda",
    "data.n_samples=32768",
    "data.size=32",
    "model.channels=[64,128]",
    "loader.batch_size=256",
    "trainer.epochs=3",
]


def gpu_info() -> dict:
    props = torch.cuda.get_device_properties(0)
    try:
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        driver = None
    return {
        "gpu": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "sm_count": props.multi_processor_count,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "driver": driver,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def train(run_dir: Path, overrides: list[str]) -> dict:
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={run_dir}", *overrides],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"train.py {' '.join(overrides)} failed:\n{result.stderr[-2000:]}")
    return json.loads((run_dir / "run.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="seedbed GPU check")
    parser.add_argument("--out", type=Path, default=Path("outputs/gpu_check"))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: no CUDA device here: the GPU check needs one", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    workload = [*WORKLOAD, *args.overrides]
    info = gpu_info()

    pipeline = [*workload, "determinism=strict", "loader.num_workers=4", "seed=0"]
    first = train(args.out / "strict_a", pipeline)
    second = train(args.out / "strict_b", pipeline)
    identical = (
        first["weights_sha256"] == second["weights_sha256"]
        and first["loss_series_sha256"] == second["loss_series_sha256"]
    )

    timed = [*workload, "data.augment=null", "seed=0"]
    seconds: dict[str, list[float]] = {"off": [], "strict": []}
    train(args.out / "warmup", [*timed, "determinism=off"])
    for rep in range(args.repeats):
        for mode in seconds:
            run = train(args.out / f"time_{mode}_{rep}", [*timed, f"determinism={mode}"])
            seconds[mode].append(run["fit_seconds"] / run["final_metrics"]["steps"])
    median = {mode: statistics.median(values) for mode, values in seconds.items()}

    report = {
        **info,
        "workload": workload,
        "strict_runs_identical": identical,
        "weights_sha256": [first["weights_sha256"], second["weights_sha256"]],
        "loss_series_sha256": [first["loss_series_sha256"], second["loss_series_sha256"]],
        "determinism_applied": first["determinism"],
        "ms_per_step": {mode: [v * 1e3 for v in values] for mode, values in seconds.items()},
        "strict_over_off": median["strict"] / median["off"],
    }
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")

    print(
        f"GPU {info['gpu']} (sm {info['compute_capability']}, {info['sm_count']} SMs, "
        f"{info['memory_gib']} GiB), driver {info['driver']}, torch {info['torch']}, "
        f"CUDA {info['cuda']}, cuDNN {info['cudnn']}"
    )
    print(f"workload: {' '.join(workload)}")
    print(f"strict run twice: {'bit-identical' if identical else 'DIFFERENT'}")
    print(f"  weights sha256 {first['weights_sha256']} / {second['weights_sha256']}")
    print("| mode | median ms/step | min-max | ratio |")
    print("|---|---|---|---|")
    for mode, values in seconds.items():
        print(
            f"| {mode} | {median[mode] * 1e3:.3f} | {min(values) * 1e3:.3f}-"
            f"{max(values) * 1e3:.3f} | {median[mode] / median['off']:.3f} |"
        )
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
