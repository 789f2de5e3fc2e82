"""What differs between two run directories, and from which step their numbers diverge.

`python -m seedbed.tools.compare <run a> <run b> [--json]` reads only what the runs
recorded (nothing is rerun): the resolved configs, environment.json, seeds,
determinism applied, metrics.jsonl, final metrics and the final weights
(checkpoints/last.pt when both have one, else the weights fingerprint). Every
number is compared bit for bit: "close" is not "identical".

`verify` uses the same comparison on runs it has just made.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from seedbed.core.checkpoint import load_checkpoint
from seedbed.core.environment import read_environment
from seedbed.core.errors import EXIT_USER_ERROR, SeedbedError
from seedbed.core.files import read_bounded
from seedbed.core.record import (
    CONFIG_FILE,
    METRICS_FILE,
    RUN_FILE,
    flatten,
    read_json,
    read_metrics,
    read_yaml,
    tensor_bytes,
)
from seedbed.tools.arguments import OneLineParser

CHECKPOINT = Path("checkpoints") / "last.pt"
EXIT_DIFFERENT = 1
# Environment fields that change results, most likely first: what `explain` lists.
LIKELY_CAUSES = (
    ("torch.version", "torch version"),
    ("torch.git_version", "torch build"),
    ("torch.cuda", "CUDA version"),
    ("torch.cudnn", "cuDNN version"),
    ("device", "device"),
    ("determinism.mode", "determinism mode"),
    ("torch_threads", "torch threads"),
    ("git.commit", "code commit"),
    ("git.dirty", "uncommitted code"),
    ("code.patch", "uncommitted changes (code.patch)"),
    ("gpus", "GPU"),
    ("cpu.model", "CPU model"),
    ("env.", "environment variable"),
    ("packages.numpy", "numpy version"),
    ("python.version", "Python version"),
)


def check_run_dir(path: str | Path) -> Path:
    """The run directory, or a one-line error naming it and what a run directory holds."""
    run_dir = Path(path)
    if not (run_dir / RUN_FILE).exists():  # one that is not a regular file is named when read
        what = "does not exist" if not run_dir.exists() else f"has no {RUN_FILE}"
        raise SeedbedError(
            f"{run_dir} {what}: expected a run directory (outputs/train/<run>) "
            f"with {RUN_FILE}, {CONFIG_FILE} and {METRICS_FILE}"
        )
    return run_dir


def _same(a: Any, b: Any) -> bool:
    """Equal, and floats equal bit for bit (so NaN == NaN and 0.0 != -0.0)."""
    if isinstance(a, float) and isinstance(b, float):
        return a.hex() == b.hex() if not (math.isnan(a) and math.isnan(b)) else True
    return type(a) is type(b) and a == b


def mapping_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, list[Any]]:
    """{key: [value in a, value in b]} for every flattened key whose values differ."""
    flat_a, flat_b = flatten(a), flatten(b)
    return {
        key: [flat_a.get(key), flat_b.get(key)]
        for key in sorted(set(flat_a) | set(flat_b))
        if not _same(flat_a.get(key), flat_b.get(key))
    }


def read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG_FILE
    if not path.exists() and not path.is_symlink():
        return {}
    config = read_yaml(path) or {}
    if not isinstance(config, dict):
        raise SeedbedError(f"{path} is damaged: it holds {type(config).__name__}, not a config")
    return config


def metrics_divergence(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first logged record that differs, bit for bit, in logging order; None if none."""
    for index in range(max(len(a), len(b))):
        record_a = a[index] if index < len(a) else None
        record_b = b[index] if index < len(b) else None
        if record_a is None or record_b is None:
            present = record_a or record_b
            return {
                "step": present.get("step"),
                "kind": present.get("kind"),
                "reason": f"only {'a' if record_b is None else 'b'} logged this record "
                f"({len(a)} vs {len(b)} records)",
                "a": record_a,
                "b": record_b,
            }
        keys = sorted(set(record_a) | set(record_b))
        differing = [k for k in keys if not _same(record_a.get(k), record_b.get(k))]
        if differing:
            return {
                "step": record_a.get("step"),
                "kind": record_a.get("kind"),
                "keys": differing,
                "a": {k: record_a.get(k) for k in differing},
                "b": {k: record_b.get(k) for k in differing},
            }
    return None


def _bytes_equal(a: Any, b: Any) -> bool:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return type(a) is type(b) and repr(a) == repr(b)  # a module's extra state
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(tensor_bytes(a), tensor_bytes(b))


def weights_difference(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]
) -> list[dict[str, Any]]:
    """Every tensor that is not bit-identical, with its max absolute difference."""
    differences = []
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            differences.append({"name": name, "reason": f"only in {'a' if name in a else 'b'}"})
        elif not _bytes_equal(a[name], b[name]):
            ta, tb = a[name], b[name]
            if not isinstance(ta, torch.Tensor) or not isinstance(tb, torch.Tensor):
                differences.append({"name": name, "reason": f"{ta!r} vs {tb!r}"})
                continue
            if ta.shape != tb.shape:
                reason = f"shape {tuple(ta.shape)} vs {tuple(tb.shape)}"
                differences.append({"name": name, "reason": reason})
                continue
            diff = (ta.double() - tb.double()).abs()
            differences.append(
                {
                    "name": name,
                    "max_abs_diff": float(diff.max()) if diff.numel() else 0.0,
                    "elements_differing": int((diff != 0).sum()),
                    "elements": diff.numel(),
                }
            )
    return differences


def _model_state(run_dir: Path) -> dict[str, torch.Tensor] | None:
    path = run_dir / CHECKPOINT
    return load_checkpoint(path)["model"] if os.path.lexists(path) else None


def _field(run: Mapping[str, Any], env: Mapping[str, Any], key: str) -> Any:
    """A value of the record (device, torch_threads, determinism.*) or of the environment."""
    source: Any = run if key.split(".")[0] in ("device", "torch_threads", "determinism") else env
    for part in key.split("."):
        source = source.get(part) if isinstance(source, Mapping) else None
    return source


def explain(
    config: Mapping[str, list[Any]],
    run_a: Mapping[str, Any],
    env_a: Mapping[str, Any],
    run_b: Mapping[str, Any],
    env_b: Mapping[str, Any],
    patch_a: str | None,
    patch_b: str | None,
) -> list[str]:
    """The recorded differences most likely to explain a mismatch, most likely first:
    the data read, the config (loggers aside: they only watch), then the environment."""
    causes = data_changes(run_a.get("data") or {}, run_b.get("data") or {})
    causes += [
        f"config {key}: {va!r} vs {vb!r}"
        for key, (va, vb) in config.items()
        if not key.startswith("logger.")
    ]
    env_diff = mapping_difference(env_a, env_b)
    for key, label in LIKELY_CAUSES:
        if key == "code.patch":
            if patch_a != patch_b:
                causes.append(f"{label}: the two runs' code.patch files differ")
        elif key.endswith("."):
            for name, (va, vb) in env_diff.items():
                if name.startswith(key):
                    causes.append(f"{label} {name[len(key) :]}: {va!r} vs {vb!r}")
        elif key == "gpus":
            names_a = [g.get("name") for g in env_a.get("gpus", [])]
            names_b = [g.get("name") for g in env_b.get("gpus", [])]
            if names_a != names_b:
                causes.append(f"{label}: {names_a or 'none'} vs {names_b or 'none'}")
        else:
            va, vb = _field(run_a, env_a, key), _field(run_b, env_b, key)
            if not _same(va, vb):
                causes.append(f"{label}: {va!r} vs {vb!r}")
    return causes


def data_changes(data_a: Mapping[str, Any], data_b: Mapping[str, Any]) -> list[str]:
    """ "data changed" when the two runs read data with different fingerprints."""
    fingerprint_a, fingerprint_b = data_a.get("fingerprint"), data_b.get("fingerprint")
    if fingerprint_a is None or fingerprint_b is None or fingerprint_a == fingerprint_b:
        return []
    where = data_a.get("paths") or data_a.get("path") or data_a.get("root")
    return [
        f"data changed: the files read differ ({where}; fingerprint "
        f"{fingerprint_a[:12]} vs {fingerprint_b[:12]})"
    ]


def _read_patch(run_dir: Path) -> str | None:
    path = run_dir / "code.patch"
    if not path.exists() and not path.is_symlink():
        return None
    return read_bounded(path, "text file").decode(errors="replace")


def compare_runs(a: str | Path, b: str | Path) -> dict[str, Any]:
    """Everything `compare` reports, as plain data (what `--json` prints)."""
    a, b = check_run_dir(a), check_run_dir(b)
    run_a, run_b = (read_json(d / RUN_FILE) for d in (a, b))
    env_a, env_b = read_environment(a), read_environment(b)
    metrics_a, metrics_b = read_metrics(a / METRICS_FILE), read_metrics(b / METRICS_FILE)
    divergence = metrics_divergence(metrics_a, metrics_b)

    state_a, state_b = _model_state(a), _model_state(b)
    if state_a is not None and state_b is not None:
        weights = weights_difference(state_a, state_b)
        weights_equal = not weights
    else:
        weights = None  # no checkpoint to open: the fingerprints are all there is
        sha_a, sha_b = run_a.get("weights_sha256"), run_b.get("weights_sha256")
        weights_equal = sha_a is not None and sha_a == sha_b

    env_diff = mapping_difference(
        {k: v for k, v in env_a.items() if k != "packages"},
        {k: v for k, v in env_b.items() if k != "packages"},
    )
    packages = mapping_difference(env_a.get("packages", {}), env_b.get("packages", {}))
    for name, values in packages.items():
        env_diff[f"packages.{name}"] = values
    identical = (
        divergence is None
        and weights_equal
        and run_a.get("status") == run_b.get("status") == "completed"
    )
    config = mapping_difference(read_config(a), read_config(b))
    report = {
        "a": str(a),
        "b": str(b),
        "status": [run_a.get("status"), run_b.get("status")],
        "config": config,
        "seeds": mapping_difference(run_a.get("seeds", {}), run_b.get("seeds", {})),
        "determinism": mapping_difference(
            run_a.get("determinism", {}), run_b.get("determinism", {})
        ),
        "environment": env_diff,
        "data": mapping_difference(
            {"fingerprint": (run_a.get("data") or {}).get("fingerprint")},
            {"fingerprint": (run_b.get("data") or {}).get("fingerprint")},
        ),
        "logged_records": [len(metrics_a), len(metrics_b)],
        "divergence": divergence,
        "final_metrics": {
            key: [run_a.get("final_metrics", {}).get(key), run_b.get("final_metrics", {}).get(key)]
            for key in sorted(
                set(run_a.get("final_metrics") or {}) | set(run_b.get("final_metrics") or {})
            )
        },
        "weights_sha256": [run_a.get("weights_sha256"), run_b.get("weights_sha256")],
        "weights_equal": weights_equal,
        "weights": weights,
        "likely_causes": explain(
            config, run_a, env_a, run_b, env_b, _read_patch(a), _read_patch(b)
        ),
        "identical": identical,
    }
    report["verdict"] = verdict(report)
    return report


def verdict(report: Mapping[str, Any]) -> str:
    """One line: identical, or where and how the runs part."""
    if report["identical"]:
        return "identical: same logged metrics and bit-identical final weights"
    status = report["status"]
    if status[0] != "completed" or status[1] != "completed":
        return f"not comparable to the end: status {status[0]} vs {status[1]}"
    parts = []
    if (divergence := report["divergence"]) is not None:
        parts.append(f"metrics diverge at {divergence['kind']} step {divergence['step']}")
    if not report["weights_equal"]:
        weights = report["weights"]
        if weights is None:
            parts.append("final weights differ (fingerprint)")
        else:
            worst = max(weights, key=lambda w: w.get("max_abs_diff", math.inf))
            detail = (
                f"max abs diff {worst['max_abs_diff']:.3g}"
                if "max_abs_diff" in worst
                else worst["reason"]
            )
            parts.append(f"{len(weights)} weight tensors differ (worst {worst['name']}: {detail})")
    if report.get("data"):
        parts.append("data changed")
    if report["seeds"]:
        parts.append("the seeds differ")
    elif report["config"]:
        parts.append("the configs differ")
    return "different: " + "; ".join(parts)


def _value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def format_report(report: Mapping[str, Any]) -> str:
    """The plain-text report: each section, then the verdict on the last line."""
    lines = [f"a: {report['a']}", f"b: {report['b']}"]

    def section(title: str, diff: Mapping[str, list[Any]], empty: str) -> None:
        lines.append(f"{title}:" + ("" if diff else f" {empty}"))
        for key, (va, vb) in diff.items():
            lines.append(f"  {key}: {_value(va)} | {_value(vb)}")

    section("config", report["config"], "same")
    section("seeds", report["seeds"], "same")
    section("determinism applied", report["determinism"], "same")
    env = {k: v for k, v in report["environment"].items() if k != "torch.build_config"}
    if "torch.build_config" in report["environment"]:
        env["torch.build_config"] = ["(differs)", "(differs)"]
    section("environment", env, "same")
    section("data", report.get("data", {}), "same")
    divergence = report["divergence"]
    if divergence is None:
        lines.append(f"metrics: identical ({report['logged_records'][0]} records)")
    else:
        lines.append(f"metrics: first divergence at {divergence['kind']} step {divergence['step']}")
        if "reason" in divergence:
            lines.append(f"  {divergence['reason']}")
        else:
            for key in divergence["keys"]:
                a, b = divergence["a"][key], divergence["b"][key]
                lines.append(f"  {key}: {_value(a)} | {_value(b)}")
    lines.append("final metrics (a | b):")
    for key, (va, vb) in report["final_metrics"].items():
        mark = "" if _same(va, vb) else "   <- differs"
        lines.append(f"  {key}: {_value(va)} | {_value(vb)}{mark}")
    sha = report["weights_sha256"]
    lines.append(
        f"weights: {'equal' if report['weights_equal'] else 'differ'} ({sha[0]} | {sha[1]})"
    )
    for weight in report["weights"] or []:
        if "max_abs_diff" in weight:
            lines.append(
                f"  {weight['name']}: max abs diff {weight['max_abs_diff']:.6g} "
                f"({weight['elements_differing']} of {weight['elements']} elements)"
            )
        else:
            lines.append(f"  {weight['name']}: {weight['reason']}")
    if report["likely_causes"] and not report["identical"]:
        lines.append("likely causes:")
        lines.extend(f"  {cause}" for cause in report["likely_causes"])
    lines.append(report["verdict"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m seedbed.tools.compare",
        description="Compare two run directories: config, environment, metrics, weights.",
    )
    parser.add_argument("a", help="a run directory (outputs/train/<run>)")
    parser.add_argument("b", help="another run directory")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = compare_runs(args.a, args.b)
    except SeedbedError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(json.dumps(report, indent=2, default=str) if args.json else format_report(report))
    return 0 if report["identical"] else EXIT_DIFFERENT


if __name__ == "__main__":
    sys.exit(main())
