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

    c1 = (SPEC.params["k1"] * SPEC.params["data_range"]) ** 2
    c2 = (SPEC.params["k2"] * SPEC.params["data_range"]) ** 2
    cov_norm = np.float32(WIN * WIN / (WIN * WIN - 1.0))  # sample covariance, as scikit-image
    ux, uy = mean(x), mean(y)
    uxx, uyy, uxy = mean(x * x), mean(y * y), mean(x * y)
    # in place from here on: a 512x512x3 map makes every temporary count
    ux_uy = ux * uy
    ux *= ux  # ux^2
    uy *= uy  # uy^2
    uxx -= ux  # E[x^2] - ux^2
    uyy -= uy
    uxy -= ux_uy
    uxx += uyy  # vx + vy (before the covariance factor)
    uxx *= cov_norm
    uxx += c2  # denominator's second factor
    ux += uy
    ux += c1  # denominator's first factor
    ux *= uxx  # denominator
    uxy *= 2 * cov_norm
    uxy += c2
    ux_uy *= 2
    ux_uy += c1
    ux_uy *= uxy  # numerator
    ux_uy /= ux
    return ux_uy


def masked_ssim(gt: np.ndarray, result: np.ndarray, fill_mask: np.ndarray) -> float:
    """Mean SSIM map value over the filled pixels (all channels). uint8 RGB (H, W, 3)."""
    # The map at a pixel depends only on its 7x7 window, so on the bounding box of the fill
    # region plus half a window the filled pixels get exactly their full-image values (where
    # the box meets the image border, both reflect the same pixels).
    rows, cols = np.flatnonzero(fill_mask.any(1)), np.flatnonzero(fill_mask.any(0))
    pad = WIN // 2
    y0, y1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, gt.shape[0])
    x0, x1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, gt.shape[1])
    full = ssim_map(gt[y0:y1, x0:x1], result[y0:y1, x0:x1])
    per_pixel = full[..., 0] + full[..., 1] + full[..., 2] if full.shape[2] == 3 else full.sum(2)
    inside = fill_mask[y0:y1, x0:x1]
    return float(per_pixel[inside].sum(dtype=np.float64) / (inside.sum() * gt.shape[2]))


def build(args):
    cv2.setNumThreads(1)  # several metric processes share the cores

    def score(item: Item) -> float:
        return masked_ssim(item.gt, item.result_with_known_from_gt(), item.fill_mask)

    return score


if __name__ == "__main__":
    sys.exit(run_metric(SPEC, build, __doc__))
