"""Time how fast each script answers `--help` and a bad scene (the goal: under 2 s).

Each command runs in a fresh Python process, `--repeats` times; the median and the slowest
wall time are reported with the command, its exit status and whether torch, diffusers or
transformers were imported (from `python -X importtime`, on one extra run). The bad-scene
commands point at a scene folder that does not exist, or a mask that does not exist.

    python perf/bench_startup.py                 # writes perf/results/startup.md
    python perf/bench_startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import realfill_utils as ru  # noqa: E402

HEAVY = ("torch", "diffusers", "transformers")
GOAL_S = 2.0  # the answer time asked of every script


def commands(tmp: Path) -> list[tuple[str, list[str]]]:
    """(label, argv after `python`) for every script: --help, then a bad scene or mask."""
    missing = str(tmp / "no-such-scene")
    out = str(tmp / "out")
    scripts = ["train_realfill.py", "infer.py", "refill.py", "loftr_ranking.py",
               "benchmarks.py", "run_realbench.py", "make_example_scenes.py",
               "make_tiny_model.py", "demo.py", "train_toy_model.py"]  # fmt: skip
    rows = [(f"{s} --help", [s, "--help"]) for s in scripts]
    bad = {
        "train_realfill.py": ["--train_data_dir", missing, "--output_dir", out],
        "infer.py": ["--model_path", missing, "--validation_image", f"{missing}/target.png",
                     "--validation_mask", f"{missing}/mask.png", "--output_dir", out],
        "refill.py": ["--train_data_dir", missing, "--output_dir", out],
        "loftr_ranking.py": ["--rank-only", "--source-dir", missing, "--ref-dir", missing],
        "benchmarks.py": ["--results_base_dir", missing],
        "run_realbench.py": ["run", "--output_dir", out, "--realbench_dir", missing],
    }  # fmt: skip
    rows += [(f"{s} <bad scene>", [s, *argv]) for s, argv in bad.items()]
    return rows


def time_command(argv: list[str], repeats: int) -> dict:
    times, code = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        code = proc.returncode
    traced = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], cwd=ROOT, capture_output=True, text=True
    )
    imported = {m.group(1) for m in re.finditer(r"\|\s+([\w.]+)\s*$", traced.stderr, re.M)}
    return {
        "median_s": statistics.median(times),
        "max_s": max(times),
        "exit": code,
        "heavy": sorted(set(HEAVY) & imported),
    }


def render(rows: list[tuple[str, list[str], dict]], repeats: int, command: str) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Startup: `--help` and bad-input answer time per script",
        "",
        f"Measured with `{command}` on {platform.node() or 'this machine'} "
        f"({os.cpu_count()} CPUs, load average {load:.1f} at the start, Python "
        f"{platform.python_version()}); {repeats} fresh processes per command, wall seconds. "
        f"Goal: under {GOAL_S:g} s. `heavy` lists torch / diffusers / transformers when the "
        "command imported them.",
        "",
        "| command | exit | median s | max s | heavy imports |",
        "|---|---:|---:|---:|---|",
    ]
    for label, _, r in rows:
        heavy = ", ".join(r["heavy"]) or "none"
        flag = "" if r["max_s"] < GOAL_S else " (over the goal)"
        lines.append(
            f"| `{label}` | {r['exit']} | {r['median_s']:.2f} | {r['max_s']:.2f}{flag} | {heavy} |"
        )
    lines += ["", "Exact commands (from the repository root):", ""]
    lines += [f"- `python {shlex.join(argv)}`" for _, argv, _ in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per command")
    p.add_argument(
        "--output", type=Path, default=ROOT / "perf" / "results" / "startup.md", help="report"
    )
    args = p.parse_args(argv)
    command = shlex.join(["python", "perf/bench_startup.py", *(argv or sys.argv[1:])])
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        rows = []
        for label, cmd in commands(Path(tmp)):
            result = time_command(cmd, args.repeats)
            print(f"{label}: {result['median_s']:.2f} s (max {result['max_s']:.2f})", flush=True)
            rows.append((label, [c.replace(tmp, "/tmp/startup") for c in cmd], result))
    with ru.atomic_path(args.output) as out:
        out.write_text(render(rows, args.repeats, command))
    print(f"written to {args.output}")
    return ru.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
