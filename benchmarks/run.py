"""Benchmarks: what reproducibility and the template cost, measured side by side in one run.

    python benchmarks/run.py                  # every benchmark, a table of medians and ratios
    python benchmarks/run.py --only loop      # one benchmark (repeat --only for several)
    python benchmarks/run.py --out bench.json # also write the results as JSON

Each benchmark runs its variants interleaved (A B A B ...) after a warm-up,
several times, and reports the median and min-max per variant and the ratio
of medians to the reference variant. Nothing here is asserted: these are
numbers to read, on your machine, not tests.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from seedbed.core.determinism import set_determinism

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from workloads import (  # noqa: E402  (after the path set-up above)
    bare_startup_script,
    dataloader_loop,
    fit_seconds,
    hand_written_loop,
    lightning_loop,
    seedbed_loop,
    setup,
    timed_checkpoint_saves,
)


@dataclass
class Result:
    """One benchmark: per-variant samples (lower is better) and the reference variant."""

    name: str
    unit: str
    reference: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""

    def summary(self) -> list[dict]:
        ref = statistics.median(self.samples[self.reference])
        return [
            {
                "variant": variant,
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "ratio": statistics.median(values) / ref,
                "n": len(values),
            }
            for variant, values in self.samples.items()
        ]


def interleaved(
    variants: dict[str, Callable[[], float]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Run A B C A B C ...: drifts in machine load hit every variant alike."""
    for _ in range(warmup):
        for run in variants.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            samples[name].append(run())
    return samples


# --- benchmarks ------------------------------------------------------------------------------


def bench_loop(repeats: int, config: str) -> Result:
    """Seconds per optimizer step: seedbed's loop vs a hand-written loop vs DataLoader."""
    overrides = ["data.augment=null"]
    if config == "cnn":
        overrides = ["experiment=cnn_images", "data.augment=null"]
    work = setup(overrides, epochs=5)
    set_determinism("strict")  # train.py's default, for every variant alike
    variants = {
        "hand-written loop": lambda: hand_written_loop(work),
        "seedbed loop": lambda: seedbed_loop(work),
        "DataLoader(TensorDataset)": lambda: dataloader_loop(work),
    }
    return Result(
        name=f"loop ({config})",
        unit="ms/step",
        reference="hand-written loop",
        samples={k: [v * 1e3 for v in vs] for k, vs in interleaved(variants, repeats).items()},
        note=f"{work.steps} steps + per-epoch validation, batch {work.batch_size}, "
        "augmentation off, same model, data and initial weights",
    )


def bench_precision(repeats: int) -> Result:
    """Seconds per step of the CPU CNN config: bf16-mixed autocast vs float32."""
    work = setup(["experiment=cnn_images", "data.augment=null"], epochs=2)
    set_determinism("strict")
    variants = {
        "precision=32": lambda: seedbed_loop(work, precision="32"),
        "precision=bf16-mixed": lambda: seedbed_loop(work, precision="bf16-mixed"),
    }
    return Result(
        name="precision (cnn, cpu)",
        unit="ms/step",
        reference="precision=32",
        samples={k: [v * 1e3 for v in vs] for k, vs in interleaved(variants, repeats).items()},
        note=f"CPU CNN config, {work.steps} steps, batch {work.batch_size}; bfloat16 autocast "
        "on a CPU without native bf16 matmuls may well be slower: the point of it is the GPU "
        "(scripts/gpu_check.sh)",
    )


def bench_accumulate(repeats: int) -> Result:
    """Microseconds per sample: 4 accumulated batches of 16 vs one batch of 64 per step."""
    overrides = ["experiment=cnn_images", "data.augment=null"]
    large = setup([*overrides, "loader.batch_size=64"], epochs=2)
    small = setup([*overrides, "loader.batch_size=16"], epochs=2)
    set_determinism("strict")
    per_sample = {
        "1 x 64": lambda: seedbed_loop(large) * large.steps / large.samples,
        "4 x 16 (accumulate_grad_batches=4)": lambda: (
            seedbed_loop(small, accumulate=4) * small.steps / small.samples
        ),
        "4 x 16 hand-written": lambda: (
            hand_written_loop(small, accumulate=4) * small.steps / small.samples
        ),
    }
    return Result(
        name="accumulate (cnn)",
        unit="us/sample",
        reference="1 x 64",
        samples={k: [v * 1e6 for v in vs] for k, vs in interleaved(per_sample, repeats).items()},
        note=f"CPU CNN config, {large.samples} samples, the same optimizer steps either way; "
        "the hand-written 4 x 16 loop shows what small batches cost whatever the loop",
    )


def _wall(command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(
        command,
        cwd=tempfile.gettempdir(),
        env={**os.environ, **(env or {})},
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def bench_startup(repeats: int) -> Result:
    """Process wall time of a one-step run: `python train.py` vs a bare torch script."""
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "bare.py"
        bare.write_text(bare_startup_script())
        train = [
            sys.executable,
            str(ROOT / "example" / "train.py"),
            "trainer.epochs=1",
            "trainer.limit_train_batches=1",
        ]
        runs = itertools.count()  # a new run needs a new directory
        variants = {
            "bare torch script": lambda: _wall([sys.executable, str(bare)]),
            "python train.py": lambda: _wall([*train, f"hydra.run.dir={tmp}/run{next(runs)}"]),
        }
        samples = interleaved(variants, repeats)
    return Result(
        name="startup",
        unit="s",
        reference="bare torch script",
        samples=samples,
        note="process start to exit after one optimizer step; train.py also validates and "
        "writes its run directory",
    )


def bench_determinism(repeats: int) -> Result:
    """Seconds per step of the default config: determinism strict vs off."""
    strict = setup(["data.augment=null", "determinism=strict"], epochs=5)
    off = setup(["data.augment=null", "determinism=off"], epochs=5)
    variants = {
        "determinism=off": lambda: seedbed_loop(off, determinism="off"),
        "determinism=strict": lambda: seedbed_loop(strict, determinism="strict"),
    }
    return Result(
        name="determinism",
        unit="ms/step",
        reference="determinism=off",
        samples={k: [v * 1e3 for v in vs] for k, vs in interleaved(variants, repeats).items()},
        note=f"default MLP, {strict.steps} steps",
    )


def bench_checkpoint(repeats: int) -> Result:
    """Training-loop time of the default run: checkpoints at the default cadence vs none."""
    none = [
        "checkpoint.every_steps=null",
        "checkpoint.at_epoch_end=false",
        "checkpoint.save_best=false",
    ]
    default_fits: list[float] = []
    default_saves: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, timed_checkpoint_saves() as saves:
        runs = itertools.count()

        def with_default_cadence() -> float:
            before = len(saves)
            default_fits.append(fit_seconds(Path(tmp) / f"run{next(runs)}", []))
            default_saves.extend(saves[before:])
            return default_fits[-1]

        variants = {
            "no checkpoints": lambda: fit_seconds(Path(tmp) / f"run{next(runs)}", none),
            "default cadence": with_default_cadence,
        }
        samples = interleaved(variants, repeats)
    # Measured directly, and steadier than the difference of two noisy runs: the time inside
    # every save of the default-cadence runs (the two outside the loop, at step 0 and at the
    # end, included: an upper bound) over their loops' time.
    share = sum(default_saves) / sum(default_fits)
    saves_per_run = len(default_saves) / len(default_fits)
    return Result(
        name="checkpoint",
        unit="s",
        reference="no checkpoints",
        samples=samples,
        note="`fit_seconds` of `python train.py` (default config, in-process); the default "
        f"cadence saves every 500 steps, after each epoch and best.pt ({saves_per_run:.0f} "
        f"saves a run, {1e3 * statistics.median(default_saves):.1f} ms median each); time inside "
        f"the saves is {100 * share:.1f}% of the loop's time",
    )


def bench_sweep(repeats: int) -> Result:
    """A 4-seed sweep: sequential vs `hydra/launcher=joblib hydra.launcher.n_jobs=2`."""
    from joblib_sweep import machine_parallelism, sweep  # noqa: PLC0415  (also run alone)

    common = ["seed=0,1,2,3"]  # default settings on both sides: threads are the config's
    hashes: dict[str, list[str]] = {}

    def run(name: str, *overrides: str) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            seconds, hashes[name] = sweep(Path(tmp) / "sweep", *common, *overrides)
        return seconds

    variants = {
        "sequential": lambda: run("sequential"),
        "joblib n_jobs=2": lambda: run(
            "joblib n_jobs=2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"
        ),
    }
    samples = interleaved(variants, repeats, warmup=0)
    parallelism = machine_parallelism()  # what a parallel sweep can gain here, at best
    same = hashes["sequential"] == hashes["joblib n_jobs=2"]
    return Result(
        name="sweep",
        unit="s",
        reference="sequential",
        samples=samples,
        note="whole `python train.py -m seed=0,1,2,3` wall time, default settings on both "
        f"sides (nothing pinned); per-seed weights identical: {same}; two independent "
        f"processes ran {parallelism:.2f}x as fast as one after another on this machine",
    )


def bench_contention(repeats: int) -> Result:
    """`python train.py trainer.epochs=2`, idle and beside a process that keeps a core busy."""
    from contention import contention_variants, scratch  # noqa: PLC0415
    from joblib_sweep import machine_parallelism  # noqa: PLC0415

    with scratch() as tmp:
        samples = interleaved(contention_variants(Path(tmp)), repeats, warmup=0)
    parallelism = machine_parallelism()  # how idle "idle" was: 2.0 on an idle 2-core machine
    return Result(
        name="contention",
        unit="s",
        reference="threads=1 (default), idle",
        samples=samples,
        note="whole process wall time of the default config, 2 epochs; 'busy': a Python busy "
        "loop in another process for the length of the run. The promise: the default's busy "
        f"time at most 2x its idle time. Two independent processes ran {parallelism:.2f}x as "
        "fast as one after another here (about 2 on an idle machine of 2+ cores)",
    )


def bench_threads(repeats: int) -> Result:
    """Training-loop seconds of the default MLP and the CNN: 1 thread vs every core."""
    from contention import scratch, threads_variants  # noqa: PLC0415

    with scratch() as tmp:
        samples = interleaved(threads_variants(Path(tmp), fit_seconds), repeats)
    return Result(
        name="threads",
        unit="s",
        reference="MLP threads=1 (default)",
        samples=samples,
        note=f"`fit_seconds` of 2 epochs, in-process, on {os.cpu_count()} cores; CNN: "
        "experiment=cnn_images with data.n_samples=2048. Compare each 'every core' row with "
        "the default row above it",
    )


def bench_peer(repeats: int) -> Result | None:
    """seedbed vs Lightning's Trainer(deterministic=True): same model, data and steps."""
    try:
        import lightning  # noqa: F401
    except ImportError:
        return None
    work = setup(["data.augment=null"], epochs=5)
    set_determinism("strict")
    variants = {
        "seedbed loop": lambda: seedbed_loop(work),
        "Lightning Trainer(deterministic=True)": lambda: lightning_loop(work),
    }
    return Result(
        name="peer",
        unit="ms/step",
        reference="seedbed loop",
        samples={k: [v * 1e3 for v in vs] for k, vs in interleaved(variants, repeats).items()},
        note="Lightning without logger, checkpointing or progress bar",
    )


def bench_defaults(repeats: int) -> Result | None:
    """Each packaged model on its real data at the defaults: seconds of training until the
    validation metric first beats a constant prediction by the case's margin."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return None
    from defaults import constant_prediction, quiet, real_data, train  # noqa: PLC0415

    from seedbed.data.sklearn_data import CASES

    quiet()
    samples: dict[str, list[float]] = {}
    reached_at: dict[str, str] = {}
    with real_data() as root, tempfile.TemporaryDirectory() as runs:
        for case in CASES:
            constant = constant_prediction(case, root)
            for repeat in range(repeats):
                run_dir = Path(runs) / f"{case.name}-{repeat}".replace(" ", "_")
                trained = train(case, root, [], run_dir)
                epoch = next(
                    (n for n, v in enumerate(trained.values, 1) if case.reached(v, constant)), None
                )
                # Epochs cost alike: the loop's time up to the first epoch that reached it.
                seconds = math.nan if epoch is None else trained.fit_seconds * epoch / 10
                samples.setdefault(case.name, []).append(seconds)
                reached_at[case.name] = (
                    f"epoch {epoch}" if epoch else "not reached"
                ) + f", final {case.metric} {trained.values[-1]:.3f} vs constant {constant:.3f}"
    return Result(
        name="defaults",
        unit="s",
        reference=CASES[0].name,
        samples=samples,
        note="to the case's margin over a constant prediction (seedbed.data.sklearn_data.CASES), "
        "at the defaults, in-process, 1 thread; "
        + "; ".join(f"{name}: {where}" for name, where in reached_at.items()),
    )


def bench_transforms(repeats: int) -> Result | None:
    """Seconds per epoch of an image-folder pipeline: seedbed's loader vs DataLoader."""
    try:
        import PIL  # noqa: F401

        from seedbed.data.vision import torchvision

        torchvision()
    except Exception:  # the vision extra is optional
        return None
    from transforms import bench_transforms as run

    return run(repeats, Result)


def bench_distributed(repeats: int) -> Result:
    """Milliseconds per optimizer step on the same global batch: 1 process vs 2 ranks of
    DDP and of FSDP2."""
    from distributed import bookkeeping_us, variants  # noqa: PLC0415  (also run alone)

    samples = interleaved(variants(fsdp=True), repeats)
    cost = bookkeeping_us()
    share = 100 * cost["per step"] / (1e3 * statistics.median(samples["1 process"]))
    return Result(
        name="distributed",
        unit="ms/step",
        reference="1 process",
        samples=samples,
        note="the default MLP (dropout 0), data.n_samples=4000 synthetic, global batch 64 "
        "(2 ranks: micro-batches of 32), the loop's `fit_seconds` per step (FSDP2's two "
        "epoch-end sharded checkpoints included), gloo on this CPU; "
        f"elastic bookkeeping: {cost['per step']:.1f} us per step (the served check, the "
        f"samples record's SHA-256 and its line in metrics.jsonl, {share:.2f}% of a "
        f"one-process step), {cost['per checkpoint']:.1f} us per checkpoint (its position)",
    )


BENCHMARKS: dict[str, Callable[[int], Result | None]] = {
    "loop": lambda r: bench_loop(r, "mlp"),
    "loop-cnn": lambda r: bench_loop(r, "cnn"),
    "startup": bench_startup,
    "determinism": bench_determinism,
    "precision": bench_precision,
    "accumulate": bench_accumulate,
    "checkpoint": bench_checkpoint,
    "sweep": bench_sweep,
    "contention": bench_contention,
    "threads": bench_threads,
    "peer": bench_peer,
    "transforms": bench_transforms,
    "defaults": bench_defaults,
    "distributed": bench_distributed,
}


# --- report ----------------------------------------------------------------------------------


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def print_table(results: list[Result], info: dict) -> None:
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
        f"({info['torch_threads']} threads), python {info['python']}"
        + (f", GPU {info['cuda']}" if info["cuda"] else "")
    )
    print()
    print("| benchmark | variant | median | min-max | ratio | n |")
    print("|---|---|---|---|---|---|")
    for result in results:
        for row in result.summary():
            print(
                f"| {result.name} | {row['variant']} | {row['median']:.3f} {result.unit} "
                f"| {row['min']:.3f}-{row['max']:.3f} | {row['ratio']:.3f} | {row['n']} |"
            )
    print()
    for result in results:
        if result.note:
            print(f"- {result.name}: {result.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="repeatable")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per variant")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: PyTorch's); 1 is steadier on a busy machine",
    )
    args = parser.parse_args(argv)
    # In-process runs: their INFO lines stay quiet (a root handler that lets warnings through).
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger().handlers[0].setLevel(logging.WARNING)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the startup subprocesses
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats} is not allowed: an int >= 1")

    results: list[Result] = []
    skipped: dict[str, str] = {}
    for name in args.only or list(BENCHMARKS):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        result = BENCHMARKS[name](args.repeats)
        if result is None:
            skipped[name] = "its optional dependency is not installed"
            continue
        results.append(result)

    info = machine()
    print_table(results, info)
    for name, reason in skipped.items():
        print(f"- {name}: skipped ({reason})")
    if args.out:
        payload = {
            "machine": info,
            "results": [{"name": r.name, "unit": r.unit, "rows": r.summary()} for r in results],
            "skipped": skipped,
        }
        args.out.write_text(json.dumps(payload, indent=2, default=lambda v: None) + "\n")
    return 0 if all(math.isfinite(row["median"]) for r in results for row in r.summary()) else 1


if __name__ == "__main__":
    sys.exit(main())
