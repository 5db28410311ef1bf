"""Geometry from the references: warp each reference into the target's frame and fill the hole.

The warp fill, a model-free completion in the spirit of TransFill (Zhou et al., CVPR 2021):
1. correspondences between each reference and the target's KNOWN region (the matchers of
   loftr_ranking.py: weight-free SIFT or LoFTR);
2. RANSAC homographies from the reference to the target; where one leaves many matches
   unexplained, further homographies are fitted on its outliers (one per scene plane), and each
   target pixel takes the homography whose inliers lie densest around it;
3. each warped reference is colour-matched to the target (per-channel affine fit on the known
   pixels it covers);
4. the warped references are fused per pixel by their support (inliers, reprojection error,
   agreement with the target's known pixels near the hole, distance from the warp's edge);
5. hole pixels no reference covers are inpainted (OpenCV Telea), and the result is composited
   over the target with the project's feathering, so the known region stays the target's own;
6. each hole pixel gets an expected error (`uncertainty`, grey levels): how far the other
   references disagree with the fill there, and at least how far its plane missed the target's
   known pixels. `fuse` uses it to weigh the warp fill against the diffusion's completions
   (geometry-guided RealFill: infer.py --prior_image ... --prior_uncertainty ...).

Conventions as in realfill_utils: `fill_mask` bool (H, W), True = fill; images uint8 RGB
(H, W, 3); homographies map reference pixels (x, y, 1) to target pixels, pixel centres at
integers, as OpenCV's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from realfill_utils import FEATHER_RADIUS, composite

RANSAC_THRESHOLD = 3.0  # px at the target's size: a match farther off is not on that plane
MIN_INLIERS = 12  # a homography needs 4; fewer than 12 consistent matches are often chance
MAX_HOMOGRAPHIES = 3  # planes per reference; TransFill's scenes rarely need more
MIN_EXTRA_SHARE = 0.05  # a further homography must explain this share of the matches
KNOWN_MARGIN = 6.0  # px: target keypoints this close to the hole see its white paint; dropped
PLANE_SIGMA = 0.05  # of the target's diagonal: how far a plane's inliers vouch for it
AGREEMENT_BAND = 24.0  # px around the hole where a warp's agreement with the target is measured
EDGE_RAMP = 8.0  # px: support fades to 0 towards the edge of a warped reference
CONSENSUS_PATCH = 7  # px: patch over which candidates are compared with each other
FALLBACK_RADIUS = 5  # px, OpenCV Telea radius for hole pixels no reference covers
RANSAC_SEED = 0  # OpenCV's RANSAC draws from its global RNG: seeded, the fill is reproducible
UNCERTAINTY_FILE = "uncertainty.png"  # warp_fill.py's per-pixel expected error of its fill
NO_ESTIMATE = 255  # grey level in UNCERTAINTY_FILE: no reference covers the pixel
SPREAD_PATCH = 7  # px: the completions' per-pixel spread is averaged over this patch
MIN_ORDER_EVIDENCE = 50  # known px where the occlusion order must beat the consensus to be used


@dataclass
class Plane:
    """One homography of a reference: reference px -> target px, with its inliers."""

    matrix: np.ndarray  # (3, 3) float64, matrix[2, 2] = 1
    inliers: int
    error_px: float  # mean reprojection error of the inliers, target px
    target_points: np.ndarray  # (inliers, 2) target-side inlier positions


@dataclass
class Alignment:
    """How one reference maps into the target, or why it does not."""

    reference: str
    matches: int = 0  # correspondences with the target's known region
    planes: list[Plane] = field(default_factory=list)
    error: str | None = None  # why the reference could not be aligned

    def report(self) -> dict:
        return {
            "reference": self.reference,
            "matches": self.matches,
            "inliers": sum(p.inliers for p in self.planes),
            "reprojection_error_px": (
                round(
                    sum(p.error_px * p.inliers for p in self.planes)
                    / max(1, sum(p.inliers for p in self.planes)),
                    3,
                )
                if self.planes
                else None
            ),
            "homographies": [
                {
                    "inliers": p.inliers,
                    "reprojection_error_px": round(p.error_px, 3),
                    "matrix": np.round(p.matrix, 8).tolist(),
                }
                for p in self.planes
            ],
            "error": self.error,
        }


@dataclass
class WarpFill:
    """The completion and how it was made."""

    image: Image.Image  # composited over the target, the target's size
    covered: np.ndarray  # bool (H, W): hole pixels some reference filled
    source: np.ndarray  # int (H, W): index of the reference with most support, -1 = none
    uncertainty: np.ndarray  # float (H, W), grey levels: the fill's expected error; inf = none
    alignments: list[Alignment]
    references: list[dict]  # per reference: report() + colour fit + hole seen / used
    occlusion: dict = field(default_factory=dict)  # nearer_planes' verdict (see warp_fill)

    @property
    def fallback_share(self) -> float:
        """Share of the hole that no reference covered (inpainted instead)."""
        hole = self.source != -2
        return float(1.0 - self.covered[hole].mean()) if hole.any() else 0.0


# ---------------------------------------------------------------------------------------------
# Correspondences and homographies
# ---------------------------------------------------------------------------------------------
def match_image(image: Image.Image, name: str, max_side: int, multiple: int = 1):
    """An in-memory image prepared for loftr_ranking's matchers: grey, long side `max_side`."""
    from loftr_ranking import MatchImage, match_size

    # Enlarged too (unlike ranking): on small images SIFT finds twice the matches at 2x.
    scale = max_side / max(image.size)
    size = match_size((round(image.width * scale), round(image.height * scale)), max_side, multiple)
    gray = image.convert("L").resize(size, Image.Resampling.LANCZOS)
    digest = hashlib.sha256(np.asarray(image).tobytes()).hexdigest()  # the matchers' memo key
    return MatchImage(name, digest, image.size, np.asarray(gray))


def known_points(points: np.ndarray, fill_mask: np.ndarray, margin: float) -> np.ndarray:
    """bool (N,): which (x, y) points lie in the known region, farther than `margin` px from
    the hole."""
    from scipy.ndimage import distance_transform_edt

    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    distance = distance_transform_edt(~fill_mask)  # 0 in the hole
    height, width = fill_mask.shape
    x = np.clip(np.rint(points[:, 0]).astype(int), 0, width - 1)
    y = np.clip(np.rint(points[:, 1]).astype(int), 0, height - 1)
    inside = (points[:, 0] >= 0) & (points[:, 0] <= width - 1)
    inside &= (points[:, 1] >= 0) & (points[:, 1] <= height - 1)
    return inside & (distance[y, x] > margin)


def implausible(
    matrix: np.ndarray, reference_size: tuple[int, int], target_size: tuple[int, int]
) -> str | None:
    """Why a homography is not one a camera could produce (None if it could): part of the
    reference maps through infinity, its footprint folds, or its view maps to less than 1/100 or
    more than 100 times the target's frame (a zoom beyond 10x either way). The scale is judged
    in frames, not pixels, so references and target of different resolutions are judged alike.
    (A mirrored reference, as front cameras save them, is allowed.)"""
    width, height = reference_size
    corners = np.array([[0, 0, 1], [width, 0, 1], [width, height, 1], [0, height, 1]])
    mapped = corners @ matrix.T
    if (mapped[:, 2] <= 0).any():
        return "part of the reference maps through infinity"
    xy = mapped[:, :2] / mapped[:, 2:]
    edges = np.roll(xy, -1, axis=0) - xy
    turns = (
        edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1]
        - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
    )
    if not ((turns > 0).all() or (turns < 0).all()):
        return "the reference's footprint folds over"
    area = 0.5 * abs(np.sum(xy[:, 0] * np.roll(xy[:, 1], -1) - np.roll(xy[:, 0], -1) * xy[:, 1]))
    ratio = area / (target_size[0] * target_size[1])  # the reference's view, in target frames
    if not 0.01 < ratio < 100.0:
        return f"the reference's view would cover {ratio:.3g} times the target's frame"
    return None


def fit_homographies(
    ref_xy: np.ndarray,
    target_xy: np.ndarray,
    reference_size: tuple[int, int],
    target_size: tuple[int, int],
    threshold: float = RANSAC_THRESHOLD,
    min_inliers: int = MIN_INLIERS,
    max_homographies: int = MAX_HOMOGRAPHIES,
    min_extra_share: float = MIN_EXTRA_SHARE,
    rejected: list[str] | None = None,
) -> list[Plane]:
    """Sequential RANSAC: a homography on all matches, then on the outliers, and so on, while
    each explains at least `min_inliers` and (after the first) `min_extra_share` of them and is
    plausible (`implausible`; the reason a fit was turned down goes to `rejected`)."""
    import cv2

    planes: list[Plane] = []
    remaining = np.arange(len(ref_xy))
    while len(planes) < max_homographies and len(remaining) >= max(4, min_inliers):
        cv2.setRNGSeed(RANSAC_SEED)
        src, dst = ref_xy[remaining].astype(np.float64), target_xy[remaining].astype(np.float64)
        if planes:
            # A further plane is seen on a small patch (a foreground object): a similarity
            # (4 degrees of freedom) extrapolates across the hole far better than a homography.
            matrix, inliers = cv2.estimateAffinePartial2D(
                src, dst, method=cv2.RANSAC, ransacReprojThreshold=threshold, maxIters=5000
            )
            if matrix is not None:
                matrix = np.vstack([matrix, [0.0, 0.0, 1.0]])
        else:
            matrix, inliers = cv2.findHomography(
                src, dst, cv2.RANSAC, threshold, maxIters=5000, confidence=0.999
            )
        if matrix is None or abs(matrix[2, 2]) < 1e-12:
            break
        matrix = matrix / matrix[2, 2]
        inliers = inliers.ravel().astype(bool)
        count = int(inliers.sum())
        if count < min_inliers or (planes and count < min_extra_share * len(ref_xy)):
            break
        reason = implausible(matrix, reference_size, target_size)
        if reason is not None:
            if rejected is not None:
                rejected.append(f"the fit with {count} inliers is implausible: {reason}")
            break
        chosen = remaining[inliers]
        projected = cv2.perspectiveTransform(ref_xy[chosen][None].astype(np.float64), matrix)[0]
        error = float(np.linalg.norm(projected - target_xy[chosen], axis=1).mean())
        planes.append(Plane(matrix, count, error, target_xy[chosen].copy()))
        remaining = remaining[~inliers]
    return planes


def align(
    matcher, reference: Image.Image, name: str, target_match, fill_mask: np.ndarray, **fit
) -> Alignment:
    """Match one reference against the target's known region and fit its homographies."""
    alignment = Alignment(name)
    ref_match = match_image(reference, name, matcher.max_side, matcher.multiple)
    ref_xy, target_xy = matcher.pairs(ref_match, target_match)
    keep = known_points(target_xy, fill_mask, KNOWN_MARGIN)
    ref_xy, target_xy = ref_xy[keep], target_xy[keep]
    alignment.matches = len(ref_xy)
    min_inliers = fit.get("min_inliers", MIN_INLIERS)
    if len(ref_xy) < min_inliers:
        alignment.error = (
            f"{len(ref_xy)} correspondences with the target's known region, "
            f"{min_inliers} needed: this reference does not overlap the known region recognisably"
        )
        return alignment
    rejected: list[str] = []
    target_size = fill_mask.shape[::-1]
    alignment.planes = fit_homographies(
        ref_xy, target_xy, reference.size, target_size, rejected=rejected, **fit
    )
    if not alignment.planes:
        alignment.error = (
            f"{rejected[0]}" if rejected else
            f"no homography explains {min_inliers} or more of the {len(ref_xy)} correspondences"
        )  # fmt: skip
    return alignment


# ---------------------------------------------------------------------------------------------
# Warping, colour, fusion
# ---------------------------------------------------------------------------------------------
def plane_labels(alignment: Alignment, size: tuple[int, int]) -> np.ndarray:
    """int (H, W): for every target pixel, the plane whose inliers lie densest around it
    (the plane with most inliers where none is near)."""
    from scipy.ndimage import gaussian_filter

    width, height = size
    if len(alignment.planes) == 1:
        return np.zeros((height, width), dtype=np.intp)
    sigma = PLANE_SIGMA * float(np.hypot(width, height))
    density = []
    for plane in alignment.planes:
        points = np.zeros((height, width))
        x = np.clip(np.rint(plane.target_points[:, 0]).astype(int), 0, width - 1)
        y = np.clip(np.rint(plane.target_points[:, 1]).astype(int), 0, height - 1)
        np.add.at(points, (y, x), 1.0)
        density.append(gaussian_filter(points, sigma, mode="constant") + 1e-9 * plane.inliers)
    return np.argmax(np.stack(density), axis=0)


def warp_planes(reference: np.ndarray, alignment: Alignment, size: tuple[int, int]):
    """The reference warped into the target frame through each of its planes: a list of
    (float32 (H, W, 3) image, bool (H, W) pixels it covers), one per plane."""
    import cv2

    ones = np.ones(reference.shape[:2], dtype=np.uint8)
    out = []
    for plane in alignment.planes:
        image = cv2.warpPerspective(
            reference.astype(np.float32), plane.matrix, size, flags=cv2.INTER_LINEAR
        )
        inside = cv2.warpPerspective(ones, plane.matrix, size, flags=cv2.INTER_NEAREST)
        inside = cv2.erode(inside, np.ones((3, 3), np.uint8)).astype(bool)  # no black rim
        out.append((image, inside))
    return out


def fit_colour(warped: np.ndarray, target: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Per-channel affine (gain, offset), (3, 2), mapping `warped` to `target` on `region`;
    refitted once without the worst quarter of residuals (occlusions, misaligned edges)."""
    fits = np.tile([1.0, 0.0], (3, 1))
    if region.sum() < 50:
        return fits  # too few shared pixels to say anything
    for c in range(3):
        x = warped[..., c][region].astype(np.float64)
        y = target[..., c][region].astype(np.float64)
        keep = np.ones_like(x, dtype=bool)
        for _ in range(2):
            design = np.stack([x[keep], np.ones(keep.sum())], axis=1)
            fits[c] = np.linalg.lstsq(design, y[keep], rcond=None)[0]
            residual = np.abs(fits[c, 0] * x + fits[c, 1] - y)
            keep = residual <= np.quantile(residual, 0.75)
    return fits


def apply_colour(warped: np.ndarray, fits: np.ndarray) -> np.ndarray:
    return np.clip(warped * fits[:, 0] + fits[:, 1], 0.0, 255.0).astype(np.float32)


def edge_ramp(valid: np.ndarray) -> np.ndarray:
    """float (H, W) in [0, 1]: 0 outside the warp, rising to 1 over EDGE_RAMP px inside it."""
    from scipy.ndimage import distance_transform_edt

    return np.clip(distance_transform_edt(valid) / EDGE_RAMP, 0.0, 1.0)


@dataclass
class Candidate:
    """One reference warped through one of its planes, colour-matched to the target."""

    reference: int  # index into the references
    image: np.ndarray  # float32 (H, W, 3)
    valid: np.ndarray  # bool (H, W)
    support: np.ndarray  # float (H, W): plane quality x edge ramp x (plane's own region)
    agreement: float  # grey levels: median |warp - target| on the known pixels next to the hole
    plane: int = 0  # index among its reference's planes: 0 the main one, 1+ fitted after it
    matrix: np.ndarray | None = None  # (3, 3) that plane, reference px -> target px


def consensus_cost(candidates: list[Candidate]) -> np.ndarray:
    """float (C, H, W): how far each candidate is from what the OTHER references show there
    (CONSENSUS_PATCH-px patch mean of the absolute difference, nearest plane of each other
    reference, mean of the closer half of those references); inf where no other reference
    covers the pixel. A plane that is wrong at a pixel (parallax) shows content the other
    references place elsewhere, so it disagrees; the right plane agrees."""
    import cv2

    refs = sorted({c.reference for c in candidates})
    height, width = candidates[0].valid.shape
    cost = np.full((len(candidates), height, width), np.inf)
    for i, ci in enumerate(candidates):
        per_ref = []
        for r in refs:
            if r == ci.reference:
                continue
            best = np.full((height, width), np.inf)
            for cj in candidates:
                if cj.reference != r:
                    continue
                both = ci.valid & cj.valid
                diff = np.abs(ci.image - cj.image).mean(axis=-1) * both
                box = (CONSENSUS_PATCH, CONSENSUS_PATCH)
                patch = cv2.boxFilter(diff, -1, box) / np.maximum(
                    cv2.boxFilter(both.astype(np.float32), -1, box), 1e-6
                )
                best = np.minimum(best, np.where(both, patch, np.inf))
            per_ref.append(best)
        if not per_ref:
            continue
        stacked = np.sort(np.stack(per_ref), axis=0)
        finite = np.isfinite(stacked).sum(axis=0)
        keep = np.maximum(1, (finite + 1) // 2)  # the closer half of the references that see it
        ranks = np.arange(len(per_ref))[:, None, None]
        closer = np.where(ranks < keep, np.where(np.isfinite(stacked), stacked, 0.0), 0.0)
        cost[i] = np.where(finite > 0, closer.sum(axis=0) / keep, np.inf)
    return cost


def nearer_planes(
    candidates: list[Candidate], best: np.ndarray, any_valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Occlusion order: where a reference's further plane (a foreground object, fitted after its
    main plane) shows what that reference really sees there, it is in front of the main plane.

    The consensus alone cannot tell: behind a foreground object's edge, two references that see
    the background uncovered there agree on it at least as well as on the object's texture.
    Each reference pixel sees one surface, so a candidate (reference r, plane i) "owns" a target
    pixel when its consensus among the same plane of the other references is lower than the
    consensus of r's other planes at the place where the same reference pixel lands through
    them. Where at least two references, and a majority of those whose further plane covers the
    pixel, own it through a further plane, that plane wins (the lowest same-plane consensus
    among them). Returns (the new choice (H, W) candidate index, where it differs from `best`,
    the per-plane consensus cost (C, H, W) for the uncertainty)."""
    import cv2

    plane = np.array([c.plane for c in candidates])
    layer_cost = np.full((len(candidates), *best.shape), np.inf)
    for level in np.unique(plane):
        members = np.flatnonzero(plane == level)
        layer_cost[members] = consensus_cost([candidates[i] for i in members])
    layer_cost = np.where(np.stack([c.valid for c in candidates]), layer_cost, np.inf)
    height, width = best.shape
    owned = []
    for i, ci in enumerate(candidates):
        own = np.isfinite(layer_cost[i])
        for j, cj in enumerate(candidates):
            if j == i or cj.reference != ci.reference:
                continue
            # target pixel p through plane i is reference pixel Mi^-1 p, which plane j puts at
            # Mj Mi^-1 p: the other plane's cost for the same reference pixel, brought to p
            to_j = cj.matrix @ np.linalg.inv(ci.matrix)
            finite = np.where(np.isfinite(layer_cost[j]), layer_cost[j], 1e6).astype(np.float32)
            other = cv2.warpPerspective(
                finite, to_j, (width, height),
                flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderValue=1e6,
            )  # fmt: skip
            own &= layer_cost[i] < other
        owned.append(own)
    front = np.flatnonzero(plane >= 1)
    if len({candidates[i].reference for i in front}) < 2:
        return best, np.zeros_like(any_valid), layer_cost
    support = np.stack([candidates[i].support for i in front])
    front_cost = np.where(np.stack([owned[i] for i in front]) & (support > 0),
                          layer_cost[front], np.inf)  # fmt: skip
    owners = np.isfinite(front_cost).sum(axis=0)
    covering = (support > 0).sum(axis=0)
    wins = (owners >= 2) & (2 * owners > covering) & any_valid
    score = np.where(np.isfinite(front_cost), -front_cost + 1e-6 * np.log(support + 1e-30), -np.inf)
    choice = np.where(wins, front[np.argmax(score, axis=0)], best)
    return choice, choice != best, layer_cost


def warp_fill(
    target: Image.Image,
    fill_mask: np.ndarray,
    references: list[tuple[str, Image.Image]],
    matcher,
    max_homographies: int = MAX_HOMOGRAPHIES,
    colour_fit: bool = True,
    feather_radius: float = FEATHER_RADIUS,
) -> WarpFill:
    """Complete `target` (hole: `fill_mask` True) from `references` [(name, image)].

    `matcher` is a loftr_ranking matcher (make_matcher("sift") needs no weights). A reference
    that cannot be aligned is reported in its Alignment and otherwise ignored.
    """
    import cv2
    from scipy.ndimage import distance_transform_edt

    size = target.size
    target_px = np.asarray(target.convert("RGB"))
    known = ~fill_mask
    near_hole = (distance_transform_edt(known) <= AGREEMENT_BAND) & known
    target_match = match_image(target, "target", matcher.max_side, matcher.multiple)

    alignments, reports, candidates = [], [], []
    for r, (name, reference) in enumerate(references):
        alignment = align(
            matcher, reference, name, target_match, fill_mask, max_homographies=max_homographies
        )
        alignments.append(alignment)
        report = alignment.report() | {"colour_fit": None, "hole_seen": 0.0, "hole_used": 0.0}
        reports.append(report)
        if alignment.error:
            continue
        planes = warp_planes(np.asarray(reference.convert("RGB")), alignment, size)
        labels = plane_labels(alignment, size)
        # One colour fit per reference, on the known pixels, each through its densest plane.
        labelled = np.choose(labels[..., None], [image for image, _ in planes])
        covered_known = known & np.choose(labels, [valid for _, valid in planes])
        fits = (
            fit_colour(labelled, target_px, covered_known)
            if colour_fit
            else np.tile([1.0, 0.0], (3, 1))
        )
        report["colour_fit"] = np.round(fits, 4).tolist()
        report["hole_seen"] = round(
            float(np.any([v for _, v in planes], axis=0)[fill_mask].mean()), 4
        )
        for k, (plane, (image, valid)) in enumerate(zip(alignment.planes, planes, strict=True)):
            image = apply_colour(image, fits)
            # Trust: inliers, reprojection error, agreement with the target next to the hole.
            difference = np.abs(image - target_px).mean(axis=-1)
            band = near_hole & valid & (labels == k)
            if not band.any():
                band = known & valid & (labels == k)
            agreement = float(np.median(difference[band])) if band.any() else 255.0
            quality = plane.inliers / (1.0 + plane.error_px**2) / (1.0 + (agreement / 8.0) ** 2)
            own = (labels == k) + 1e-3  # another plane's region: only where nothing else is
            support = quality * edge_ramp(valid) * own
            candidates.append(Candidate(r, image, valid, support, agreement, k, plane.matrix))

    height, width = fill_mask.shape
    filled = target_px.astype(np.float32)
    source = np.full((height, width), -1, dtype=np.intp)
    covered = np.zeros((height, width), dtype=bool)
    uncertainty = np.full((height, width), np.inf)
    occlusion = {"applied": False}
    if candidates:
        support = np.stack([c.support for c in candidates])  # (C, H, W), 0 where not valid
        cost = consensus_cost(candidates)
        cost = np.where(support > 0, cost, np.inf)
        # Where two or more references see a pixel, the candidate the others agree with
        # wins (support breaks near-ties); where one does, its best-supported plane.
        agreed = np.isfinite(cost).any(axis=0)
        score = np.where(agreed, -cost + 1e-6 * np.log(support + 1e-30), np.log(support + 1e-30))
        score = np.where(support > 0, score, -np.inf)
        best = np.argmax(score, axis=0)
        any_valid = (support > 0).any(axis=0)
        images = np.stack([c.image for c in candidates])
        # Occlusion order, kept only where the target's own known pixels confirm it: where it
        # changes the choice there, it must reproduce them better than the consensus does.
        ordered, changed, layer_cost = nearer_planes(candidates, best, any_valid)
        check = changed & known & any_valid
        errors = []
        for choice in (ordered, best):
            picked = np.take_along_axis(images, choice[None, ..., None], 0)[0]
            errors.append(float(np.abs(picked - target_px)[check].mean()) if check.any() else 0.0)
        applied = bool(check.sum() >= MIN_ORDER_EVIDENCE and errors[0] < errors[1])
        occlusion = {
            "applied": applied,
            "hole_share": round(float((changed & fill_mask).sum() / fill_mask.sum()), 4),
            "known_pixels_checked": int(check.sum()),
            "known_error_ordered": round(errors[0], 2),
            "known_error_unordered": round(errors[1], 2),
        }
        if applied:
            cost = np.where(changed[None], layer_cost, cost)  # its own plane's consensus
            best = ordered
        chosen = np.take_along_axis(images, best[None, ..., None], 0)[0]
        filled[any_valid] = chosen[any_valid]  # the feather band outside the hole blends it too
        covered = fill_mask & any_valid
        # The fill's expected error: how far the other references are from it where they see
        # the pixel, and never less than how far its plane missed the target's known pixels.
        chosen_cost = np.take_along_axis(cost, best[None], 0)[0]
        missed = np.array([c.agreement for c in candidates])[best]
        expected = np.maximum(np.where(np.isfinite(chosen_cost), chosen_cost, 0.0), missed)
        uncertainty = np.where(any_valid, expected, np.inf)
        owner = np.array([c.reference for c in candidates])[best]
        source = np.where(any_valid, owner, -1)
        for i in range(len(references)):
            reports[i]["hole_used"] = round(
                float((covered & (owner == i)).sum() / fill_mask.sum()), 4
            )
    uncovered = fill_mask & ~covered
    filled_u8 = np.clip(np.rint(filled), 0, 255).astype(np.uint8)
    if uncovered.any():
        filled_u8 = cv2.inpaint(
            filled_u8, uncovered.astype(np.uint8) * 255, FALLBACK_RADIUS, cv2.INPAINT_TELEA
        )
    source = np.where(fill_mask, source, -2)  # -2: known pixel
    image = composite(Image.fromarray(filled_u8), target.convert("RGB"), fill_mask, feather_radius)
    return WarpFill(image, covered, source, uncertainty, alignments, reports, occlusion)


# ---------------------------------------------------------------------------------------------
# Fusing the diffusion's completions with the warp fill
# ---------------------------------------------------------------------------------------------
def uncertainty_image(uncertainty: np.ndarray) -> Image.Image:
    """8-bit grey image of an uncertainty map (grey levels, clipped at 254; inf -> NO_ESTIMATE)."""
    finite = np.isfinite(uncertainty)
    levels = np.clip(np.rint(np.where(finite, uncertainty, 0.0)), 0, NO_ESTIMATE - 1)
    return Image.fromarray(np.where(finite, levels, NO_ESTIMATE).astype(np.uint8), mode="L")


def read_uncertainty(image: Image.Image) -> np.ndarray:
    """float (H, W) grey levels from uncertainty_image()'s picture; inf where NO_ESTIMATE."""
    levels = np.asarray(image.convert("L"), dtype=np.float64)
    return np.where(levels >= NO_ESTIMATE, np.inf, levels)


def fuse(
    completions: list[np.ndarray],
    prior: np.ndarray,
    uncertainty: np.ndarray,
    fill_mask: np.ndarray,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Pull each completion towards `prior` inside the hole where the prior is surer.

    Two estimates of each hole pixel, each with an expected error: the prior (a warp fill) with
    `uncertainty` (grey levels, inf = none), measured against outside evidence (the other
    references, the target's known pixels); and the diffusion, whose error is its spread across
    the completions plus any bias they share. The bias shows as disagreement with the prior
    beyond the prior's own uncertainty: for independent errors the mean squared difference
    between the completions and the prior is uncertainty^2 + diffusion error^2, so the diffusion's
    squared error is estimated as max(spread^2, mean (completion - prior)^2 - uncertainty^2)
    (7 px patches). Each completion then gets inverse-variance weighting, weight on the prior =
    diffusion error^2 / (diffusion error^2 + uncertainty^2). Where the completions agree with
    the prior within its uncertainty, their spread decides; where they all disagree with a sure
    prior, the prior wins. `completions` uint8 (H, W, 3), at least two; `prior` uint8 (H, W, 3);
    `fill_mask` bool (H, W), True = fill. Returns the fused completions (uint8; unchanged outside
    the hole) and the weight map (float (H, W) in [0, 1], 0 outside the hole).
    """
    import cv2

    if len(completions) < 2:
        raise ValueError("fusing needs at least two completions: their spread is the estimate")
    stack = np.stack(completions).astype(np.float32)
    prior_px = prior.astype(np.float32)

    def patch_mean(values: np.ndarray) -> np.ndarray:
        box = (SPREAD_PATCH, SPREAD_PATCH)
        return cv2.boxFilter(values.astype(np.float32), -1, box).astype(np.float64)

    spread2 = patch_mean(stack.var(axis=0, ddof=1).mean(axis=-1))
    apart2 = patch_mean(((stack - prior_px) ** 2).mean(axis=(0, -1)))
    prior2 = np.where(np.isfinite(uncertainty), uncertainty, 0.0) ** 2
    diffusion2 = np.maximum(spread2, apart2 - prior2)
    weight = (diffusion2 + 0.5) / (diffusion2 + prior2 + 1.0)  # two exact estimates weigh alike
    weight = np.where(np.isfinite(uncertainty) & fill_mask, weight, 0.0)
    w = weight[..., None].astype(np.float32)
    fused = [np.clip(np.rint(w * prior_px + (1 - w) * c), 0, 255).astype(np.uint8) for c in stack]
    return fused, weight
