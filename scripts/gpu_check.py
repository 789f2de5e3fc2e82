"""On a CUDA machine: are runs bit-identical on the GPU, in float32 and in mixed precision, and
what do strict determinism and bf16-mixed cost?

    bash scripts/gpu_check.sh [--out DIR] [--repeats N] [extra train.py overrides ...]

1. Records the GPU, driver, CUDA and cuDNN versions.
2. The data pipeline: the CNN config (`experiment=cnn_images`, augmentation on,
   DataLoader workers) with `determinism=strict`, twice: weights and loss-series
   SHA-256 must match; then the same for one epoch under FSDP2
   (`trainer.distributed=fsdp`, torchrun, one rank per GPU).
3. A model bound by the GPU, not the host (CIFAR-shaped 3x32x32 data, a CNN with
   128/256/512 channels, batch 256): two `determinism=strict` runs in each of
   `32`, `bf16-mixed` and `16-mixed` must match.
4. Times, interleaved, from each run's `fit_seconds`: `strict` against `off` in
   `32`, and `bf16-mixed` against `32` (both strict).

Prints a table, writes `gpu_check.json` into --out, and exits 0 only when every
pair of runs is bit-identical. `--device cpu` runs the same script on the CPU
(16-mixed left out; pass tiny overrides), to try it before a GPU is at hand.
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
# The data pipeline's check: small images, augmentation and worker processes.
PIPELINE = [
    "experiment=cnn_images",
    "data.n_samples=32768",
    "data.size=32",
    "model.channels=[64,128]",
    "loader.batch_size=256",
    "loader.num_workers=4",
    "trainer.epochs=2",
]
# Bound by the GPU: ~240 GFLOP a step (forward and backward), CIFAR-shaped, batch 256.
GPU_BOUND = [
    "experiment=cnn_images",
    "data.n_samples=32768",
    "data.size=32",
    "data.augment=null",
    "model.channels=[128,256,512]",
    "loader.batch_size=256",
    "trainer.epochs=2",
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


def train(run_dir: Path, overrides: list[str], ranks: int = 0) -> dict:
    """One run of example/train.py; with `ranks`, under torchrun with that many processes."""
    launcher = ["-m", "torch.distributed.run", f"--nproc_per_node={ranks}", "--standalone"]
    result = subprocess.run(
        [
            sys.executable,
            *(launcher if ranks else []),
            str(ROOT / "example" / "train.py"),
            f"hydra.run.dir={run_dir}",
            *overrides,
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"train.py {' '.join(overrides)} failed:\n{result.stderr[-2000:]}")
    return json.loads((run_dir / "run.json").read_text())


def twice(out: Path, name: str, overrides: list[str], ranks: int = 0) -> dict:
    """Two runs of `overrides`: are their weights and loss series identical?"""
    first, second = (train(out / f"{name}_{n}", overrides, ranks) for n in "ab")
    keys = ("weights_sha256", "loss_series_sha256")
    return {
        "identical": all(first[k] == second[k] for k in keys),
        **{k: [first[k], second[k]] for k in keys},
        "determinism_applied": first["determinism"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="seedbed GPU check")
    parser.add_argument("--out", type=Path, default=Path("outputs/gpu_check"))
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per variant")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here: the GPU check needs one", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    common = [f"trainer.device={args.device}", "determinism=strict", "seed=0"]
    pipeline = [*PIPELINE, *common, *args.overrides]
    bound = [*GPU_BOUND, *common, *args.overrides]
    info = gpu_info() if args.device == "cuda" else {"gpu": None, "device": "cpu"}
    precisions = ["32", "bf16-mixed"] + (["16-mixed"] if args.device == "cuda" else [])

    checks = {"pipeline (32)": twice(args.out, "pipeline", pipeline)}
    # FSDP2 (sharded model, sharded checkpoints) on every GPU here, one rank each.
    ranks = torch.cuda.device_count() if args.device == "cuda" else 2
    fsdp = [*pipeline, "trainer.distributed=fsdp", "trainer.epochs=1"]
    checks[f"pipeline, fsdp on {ranks} rank(s)"] = twice(args.out, "fsdp", fsdp, ranks)
    for precision in precisions:
        name = f"gpu-bound ({precision})"
        checks[name] = twice(
            args.out, f"bound_{precision}", [*bound, f"trainer.precision={precision}"]
        )

    variants = {
        "32, determinism=off": [*bound, "determinism=off"],
        "32, determinism=strict": bound,
        "bf16-mixed, determinism=strict": [*bound, "trainer.precision=bf16-mixed"],
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    train(args.out / "warmup", variants["32, determinism=off"])
    for rep in range(args.repeats):  # interleaved: drifts hit every variant alike
        for i, (name, overrides) in enumerate(variants.items()):
            run = train(args.out / f"time_{i}_{rep}", overrides)
            seconds[name].append(run["fit_seconds"] / run["final_metrics"]["steps"])
    median = {name: statistics.median(values) for name, values in seconds.items()}
    ratios = {
        "strict_over_off": median["32, determinism=strict"] / median["32, determinism=off"],
        "bf16_over_32": median["bf16-mixed, determinism=strict"] / median["32, determinism=strict"],
    }
    identical = all(check["identical"] for check in checks.values())

    report = {
        **info,
        "workloads": {"pipeline": pipeline, "gpu_bound": bound},
        "identical": identical,
        "checks": checks,
        "ms_per_step": {name: [v * 1e3 for v in values] for name, values in seconds.items()},
        **ratios,
    }
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")

    if info["gpu"]:
        print(
            f"GPU {info['gpu']} (sm {info['compute_capability']}, {info['sm_count']} SMs, "
            f"{info['memory_gib']} GiB), driver {info['driver']}, torch {info['torch']}, "
            f"CUDA {info['cuda']}, cuDNN {info['cudnn']}"
        )
    print(f"pipeline workload: {' '.join(pipeline)}")
    print(f"gpu-bound workload: {' '.join(bound)}")
    for name, check in checks.items():
        verdict = "bit-identical" if check["identical"] else "DIFFERENT"
        print(f"{name} twice: {verdict}  (weights {check['weights_sha256'][0][:16]}...)")
    print("| variant (gpu-bound) | median ms/step | min-max | ratio to 32 strict |")
    print("|---|---|---|---|")
    for name, values in seconds.items():
        print(
            f"| {name} | {median[name] * 1e3:.3f} | {min(values) * 1e3:.3f}-"
            f"{max(values) * 1e3:.3f} | {median[name] / median['32, determinism=strict']:.3f} |"
        )
    print(f"strict / off: {ratios['strict_over_off']:.3f}", end="; ")
    print(f"bf16-mixed / 32: {ratios['bf16_over_32']:.3f}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
