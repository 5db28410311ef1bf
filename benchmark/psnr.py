"""PSNR inside the filled region (mask = 1), at the ground truth's size.

Reads JSON-lines jobs {id, gt, mask, result} and streams one JSON line per result (format in
benchmark/common.py and docs/benchmarks.md). Example:
    python -m benchmark.psnr --jobs_file jobs.jsonl
    echo '{"id": "0", "gt": "gt.png", "mask": "mask.png", "result": "0.png"}' \
        | python benchmark/psnr.py
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.common import METRICS, Item, run_metric  # noqa: E402

SPEC = METRICS["PSNR"]


def masked_psnr(gt: np.ndarray, result: np.ndarray, fill_mask: np.ndarray) -> float:
    """PSNR in dB over the pixels where fill_mask is True; uint8 RGB (H, W, 3); inf if equal."""
    diff = gt.astype(np.int32) - result  # exact integer arithmetic, no (H, W, 3) masking
    squared = np.einsum("ijk,ijk->ij", diff, diff)  # per-pixel sum over the channels
    mse = float(squared[fill_mask].sum(dtype=np.int64)) / (3 * int(fill_mask.sum()))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def build(args):
    def score(item: Item) -> float:
        return masked_psnr(item.gt, item.result, item.fill_mask)

    return score


if __name__ == "__main__":
    sys.exit(run_metric(SPEC, build, __doc__))
