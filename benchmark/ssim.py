"""SSIM inside the filled region: the mean of the SSIM map over the pixels where mask = 1.

The map equals scikit-image's `structural_similarity(gt, result, channel_axis=2, data_range=255,
full=True)` (7x7 uniform window, sample covariance), computed in float32 with OpenCV box
filters (several times faster; within 1e-5 of scikit-image). The result's known region is replaced
by the ground truth's first, so only the filled pixels are judged. Example:
    python -m benchmark.ssim --jobs_file jobs.jsonl
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.common import METRICS, Item, run_metric  # noqa: E402

SPEC = METRICS["SSIM"]
WIN = SPEC.params["win_size"]


def ssim_map(gt: np.ndarray, result: np.ndarray) -> np.ndarray:
    """Per-pixel, per-channel SSIM map (H, W, C) of two uint8 images, as scikit-image's."""
    x, y = gt.astype(np.float32), result.astype(np.float32)

    def mean(z):  # scipy's 'reflect' border is OpenCV's BORDER_REFLECT
        return cv2.boxFilter(z, -1, (WIN, WIN), normalize=True, borderType=cv2.BORDER_REFLECT)

    ux, uy = mean(x), mean(y)
    cov_norm = WIN * WIN / (WIN * WIN - 1.0)  # sample covariance, like scikit-image
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1 = (SPEC.params["k1"] * SPEC.params["data_range"]) ** 2
    c2 = (SPEC.params["k2"] * SPEC.params["data_range"]) ** 2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))


def masked_ssim(gt: np.ndarray, result: np.ndarray, fill_mask: np.ndarray) -> float:
    """Mean SSIM map value over the filled pixels (all channels). uint8 RGB (H, W, 3)."""
    # The map at a pixel depends only on its 7x7 window, so on the bounding box of the fill
    # region plus half a window the filled pixels get exactly their full-image values (where
    # the box meets the image border, both reflect the same pixels).
    rows, cols = np.flatnonzero(fill_mask.any(1)), np.flatnonzero(fill_mask.any(0))
    pad = WIN // 2
    y0, y1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, gt.shape[0])
    x0, x1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, gt.shape[1])
    per_pixel = ssim_map(gt[y0:y1, x0:x1], result[y0:y1, x0:x1]).sum(axis=2, dtype=np.float64)
    inside = fill_mask[y0:y1, x0:x1]
    return float(per_pixel[inside].sum() / (inside.sum() * gt.shape[2]))


def build(args):
    cv2.setNumThreads(1)  # several metric processes share the cores

    def score(item: Item) -> float:
        return masked_ssim(item.gt, item.result_with_known_from_gt(), item.fill_mask)

    return score


if __name__ == "__main__":
    sys.exit(run_metric(SPEC, build, __doc__))
