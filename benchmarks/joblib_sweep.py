"""A 4-seed sweep, sequential vs `hydra/launcher=joblib hydra.launcher.n_jobs=2`: wall time and
per-seed weights hashes. Both sides run at default settings: the thread count is the config's
(`trainer.threads`, 1 by default), so nothing is pinned on either side.

    python benchmarks/joblib_sweep.py [extra overrides...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seedbed.core.launchers import available_cores

ROOT = Path(__file__).resolve().parents[1]


def sweep(sweep_dir: Path, *overrides: str) -> tuple[float, list[str]]:
    command = [
        sys.executable,
        str(ROOT / "example" / "train.py"),
        "-m",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    start = time.perf_counter()
    subprocess.run([*command, *overrides], check=True, capture_output=True)
    seconds = time.perf_counter() - start
    jobs = sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return seconds, [json.loads((j / "run.json").read_text())["weights_sha256"] for j in jobs]


# The same fixed CPU work in one process, then in two at once: what the machine's cores give
# when nothing is shared (on a machine whose cores are shared with others, far from 2x).
PROBE = (
    "import torch; torch.set_num_threads(1); x = torch.ones(256, 256); [x @ x for _ in range(2000)]"
)


def machine_parallelism() -> float:
    def probe(copies: int) -> float:
        start = time.perf_counter()
        runs = [
            subprocess.Popen([sys.executable, "-c", PROBE], stdout=subprocess.DEVNULL)
            for _ in range(copies)
        ]
        for run in runs:
            run.wait()
        return time.perf_counter() - start

    return 2 * probe(1) / probe(2)


def main() -> None:
    common = ["seed=0,1,2,3", *sys.argv[1:]]
    with tempfile.TemporaryDirectory() as tmp:
        seq_s, seq_hashes = sweep(Path(tmp) / "seq", *common)
        par_s, par_hashes = sweep(
            Path(tmp) / "par", *common, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"
        )
    print(f"cores {available_cores()}, default settings on both sides")
    print(
        f"two independent processes run {machine_parallelism():.2f}x as fast as one after another"
    )
    print(f"sequential      {seq_s:7.1f} s")
    print(f"joblib n_jobs=2 {par_s:7.1f} s   speed-up {seq_s / par_s:.2f}x")
    print(f"per-seed weights identical: {seq_hashes == par_hashes}")
    sys.exit(0 if seq_hashes == par_hashes else 1)


if __name__ == "__main__":
    main()
