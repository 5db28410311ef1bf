"""Time the README's first command, `python demo.py`, from a fresh output folder, and keep what it
printed: the un-tuned base and RealFill side by side.

    python perf/bench_demo.py          # about 3 minutes on 2 CPU cores
Results: perf/results/demo.md and .json.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import realfill_utils as ru  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "demo.py", "--output_dir", str(Path(tmp) / "demo")]
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"demo.py failed ({done.returncode}):\n{done.stderr[-3000:]}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    stages = [line[3:] for line in done.stdout.splitlines() if line.startswith("== ") and
              " done in " in line]  # fmt: skip
    lines = [
        "# The demo, timed",
        "",
        "Command: `python perf/bench_demo.py` (runs `python demo.py` into a fresh folder)",
        "",
        f"- Wall time: **{seconds:.0f} s** (goal: under 3 minutes after setup), on "
        f"{platform.machine()} with {len(os.sched_getaffinity(0))} cores; "
        f"largest process peak RSS {peak_mb:.0f} MB.",
        "",
        "Its stages: " + "; ".join(stages) + ".",
        "",
        "What it printed (masked scores inside the hole of data/Custom/1):",
        "",
        *table,
    ]
    md = ROOT / "perf" / "results" / "demo.md"
    ru.write_results(
        md,
        {
            "command": cmd,
            "seconds": seconds,
            "peak_rss_mb": peak_mb,
            "stages": stages,
            "table": table,
        },
        lines,
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
