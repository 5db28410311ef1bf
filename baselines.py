"""Simple fills that every quality figure is compared with, and the ceilings of a toy model.

Each function takes a loaded scene (`realfill_utils.load_scene`) and returns a completed image at
the target's size whose known region is the target's own pixels, so it can be scored exactly as
a RealFill completion is:

- `mean_fill`: the hole painted with the mean colour of the known region;
- `telea_fill`: OpenCV's Telea inpainting (radius 5), which propagates the hole's border inward;
- `homography_fill`: SIFT matches between each reference and the target's known region, a
  RANSAC homography, and the best-aligned reference warped into the hole (optionally with a
  per-channel colour fit to the known region); on views of a flat scene it is nearly exact;
- `resize_ceiling` / `vae_ceiling`: the ground truth through the model's resolution (and its
  VAE), an upper bound for any completion the model can produce at that size.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

import realfill_utils as ru

TELEA_RADIUS = 5  # px: OpenCV's usual neighbourhood for Telea's fast marching
MIN_INLIERS = 12  # fewer RANSAC inliers than this: the reference is not considered aligned
RANSAC_THRESHOLD = 3.0  # px reprojection error in the target frame


def _known_pixels(scene: ru.Scene) -> tuple[np.ndarray, np.ndarray]:
    target = np.asarray(scene.target)
    return target, ~scene.fill_mask


def _paste(scene: ru.Scene, fill: np.ndarray) -> Image.Image:
    """The fill inside the hole, the target everywhere else (a hard seam: fair to baselines)."""
    target = np.asarray(scene.target)
    out = np.where(scene.fill_mask[..., None], np.clip(np.rint(fill), 0, 255), target)
    return Image.fromarray(out.astype(np.uint8))


def mean_fill(scene: ru.Scene) -> Image.Image:
    target, known = _known_pixels(scene)
    return _paste(scene, np.broadcast_to(target[known].mean(0), target.shape))


def telea_fill(scene: ru.Scene) -> Image.Image:
    import cv2

    target = np.asarray(scene.target)
    hole = scene.fill_mask.astype(np.uint8) * 255
    return _paste(scene, cv2.inpaint(target, hole, TELEA_RADIUS, cv2.INPAINT_TELEA))


def _sift(gray: np.ndarray, mask: np.ndarray | None = None):
    import cv2

    return cv2.SIFT_create().detectAndCompute(gray, None if mask is None else mask)


def align_reference(reference: Image.Image, scene: ru.Scene) -> dict:
    """Homography from a reference into the target frame, fitted on matches with the target's
    known region only; {"homography": 3x3 or None, "inliers": n, "matches": n}."""
    import cv2

    target = np.asarray(scene.target)
    known = (~scene.fill_mask).astype(np.uint8) * 255
    kp_t, des_t = _sift(cv2.cvtColor(target, cv2.COLOR_RGB2GRAY), known)
    kp_r, des_r = _sift(cv2.cvtColor(np.asarray(reference), cv2.COLOR_RGB2GRAY))
    if des_t is None or des_r is None or len(kp_t) < 4 or len(kp_r) < 4:
        return {"homography": None, "inliers": 0, "matches": 0}
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(des_r, des_t, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.75 * p[1].distance]
    if len(good) < 4:
        return {"homography": None, "inliers": 0, "matches": len(good)}
    src = np.float32([kp_r[m.queryIdx].pt for m in good])
    dst = np.float32([kp_t[m.trainIdx].pt for m in good])
    homography, inlier_mask = cv2.findHomography(src, dst, cv2.RANSAC, RANSAC_THRESHOLD)
    inliers = int(inlier_mask.sum()) if inlier_mask is not None else 0
    if homography is None or inliers < MIN_INLIERS:
        return {"homography": None, "inliers": inliers, "matches": len(good)}
    return {"homography": homography, "inliers": inliers, "matches": len(good)}


def homography_fill(scene: ru.Scene, colour_fit: bool = False) -> tuple[Image.Image, dict]:
    """The reference with the most RANSAC inliers, warped into the hole; where it does not
    reach, Telea. With `colour_fit`, each channel is mapped by a least-squares gain and offset
    fitted where the warp overlaps the known region. Returns the image and what was used."""
    import cv2

    target, known = _known_pixels(scene)
    fits = [align_reference(r, scene) for r in scene.references]
    best = max(range(len(fits)), key=lambda i: fits[i]["inliers"])
    info = {
        "reference": scene.reference_paths[best].name,
        "inliers": [f["inliers"] for f in fits],
    }
    if fits[best]["homography"] is None:
        info["fallback"] = "telea (no reference aligned)"
        return telea_fill(scene), info
    height, width = target.shape[:2]
    reference = np.asarray(scene.references[best])
    warped = cv2.warpPerspective(reference, fits[best]["homography"], (width, height))
    covered = cv2.warpPerspective(
        np.full(reference.shape[:2], 255, np.uint8), fits[best]["homography"], (width, height)
    ) > 254  # fmt: skip
    warped = warped.astype(np.float32)
    if colour_fit:
        overlap = covered & known
        for c in range(3):
            x, y = warped[..., c][overlap], target[..., c][overlap].astype(np.float32)
            gain, offset = np.polyfit(x, y, 1) if x.std() > 1e-3 else (1.0, y.mean() - x.mean())
            warped[..., c] = warped[..., c] * gain + offset
    fallback = np.asarray(telea_fill(scene), np.float32)
    fill = np.where(covered[..., None], warped, fallback)
    info["hole_covered"] = round(float(covered[scene.fill_mask].mean()), 3)
    return _paste(scene, fill), info


def resize_ceiling(scene: ru.Scene, size: tuple[int, int]) -> Image.Image:
    """The ground truth shrunk to `size` (the model's) and back, pasted into the hole."""
    small = scene.gt.resize(size, Image.Resampling.LANCZOS)
    return _paste(scene, np.asarray(small.resize(scene.gt.size, Image.Resampling.LANCZOS)))


def vae_ceiling(scene: ru.Scene, vae, size: tuple[int, int]) -> Image.Image:
    """The ground truth at `size` through the VAE (posterior mean) and back, pasted into the
    hole: what a perfect latent completion would score after decoding and upscaling."""
    import torch

    small = np.asarray(scene.gt.resize(size, Image.Resampling.LANCZOS), np.float32)
    pixels = torch.from_numpy(small).permute(2, 0, 1)[None] / 127.5 - 1
    with torch.no_grad():
        decoded = vae.decode(vae.encode(pixels).latent_dist.mode()).sample[0].clamp(-1, 1)
    decoded = ((decoded.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    back = Image.fromarray(decoded).resize(scene.gt.size, Image.Resampling.LANCZOS)
    return _paste(scene, np.asarray(back))
