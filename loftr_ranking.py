"""Rank completions by their correspondences with the references; optionally pick the best.

A completion's score is the number of correspondences between each reference and the
completion whose completion-side keypoint lies in the FILLED region (the target's mask, dilated
by a few pixels), summed over the references: RealFill's correspondence-based seed selection.
Matches in the known region do not count, since every completion shares it with the target.
Equal counts are ordered by the distance to the per-pixel median of all the completions inside
the hole, nearest first (the least idiosyncratic completion; `median_rms` in the JSON).

  # rank only: write loftr_ranking_scores.json into the completions' folder
  python loftr_ranking.py --rank-only --source-dir results/RealBench-0-results \\
      --ref-dir RealBench/0/ref --mask RealBench/0/target/mask.png

  # selection (ReFill): a NEW scene folder = the original references + the best completions,
  # topped up to --target-count references, with the same target; the dataset is not touched
  python loftr_ranking.py --source-dir results/RealBench-0-results --ref-dir RealBench/0/ref \\
      --target-count 5 --output-scene-dir work/RealBench-0-refill-scene

LoFTR needs weights: --loftr-weights PATH (or REALFILL_LOFTR_WEIGHTS), else kornia's checkpoint
in the torch hub cache, else kornia's download (skipped when HF_HUB_OFFLINE is set).
--matcher sift needs no weights. Pair results are cached by content, so re-ranking is instant.
Every flag also takes the snake_case spelling of the other scripts (--source_dir, --ref_dir, ...).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import socket
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
from PIL import Image

from realfill_utils import (
    EXIT_FAILED,
    EXIT_OK,
    RANKING_TIE_BREAK,
    HelpFormatter,
    SceneError,
    atomic_write_json,
    check_mask,
    claim_output_file,
    hub_offline,
    image_size,
    list_images,
    load_image,
    load_mask,
    names_of,
    natural_key,
    note,
    overlaps,
    positive_int,
    ranked_images,
    run_main,
)

SCHEMA_VERSION = 1  # of loftr_ranking_scores.json and scene_engine's refill_selection.json
CACHE_VERSION = 1  # bump when the matching code changes its answers; old entries then miss
SCORES_FILE = "loftr_ranking_scores.json"
SCRIPT = "loftr_ranking.py"
CACHE_DIR_NAME = ".ranking_cache"  # default pair cache, inside --source-dir
WEIGHTS_ENV = "REALFILL_LOFTR_WEIGHTS"
RANDOM_WEIGHTS = "random"  # --loftr-weights random: untrained LoFTR, for smoke tests and timing

MATCHERS = ("loftr", "sift")
MODEL_TYPES = ("outdoor", "indoor")  # kornia's pretrained LoFTR checkpoints
CONF_THRESHOLD = 0.7  # LoFTR match confidence to count; the earlier implementation's value
# px, long side images are resized to for matching. LoFTR's cost grows with the area: 256 is the
# largest size measured under 1 CPU-second per pair (perf/results/ranking.md); SIFT is ~10x
# cheaper, so it keeps more detail.
MAX_SIDE = {"loftr": 256, "sift": 512}
MASK_DILATION = 4  # px at the completion's size: matches on the hole's border still count
SIFT_RATIO = 0.8  # Lowe's ratio test
RANSAC_THRESHOLD = 2.0  # px at the matching size, Sampson distance to the fundamental matrix
MIN_MATCHES = 8  # a fundamental matrix needs 8; fewer tentative matches score 0
AGREEMENT_SIDE = 256  # px, long side at which completions are compared with their median


class RankingAborted(SceneError):
    """A problem that spoils every pair (no LoFTR weights, an unreadable reference)."""


# ---------------------------------------------------------------------------------------------
# Images prepared for matching
# ---------------------------------------------------------------------------------------------
@dataclass
class MatchImage:
    """One image decoded for matching: grey uint8 at the matching size, plus its identity."""

    name: str
    sha256: str
    full_size: tuple[int, int]  # (width, height) on disk
    gray: np.ndarray  # (h, w) uint8 at the matching size

    def to_full(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 2) x, y pixel coordinates at the matching size to the on-disk size."""
        height, width = self.gray.shape
        scale = np.array([self.full_size[0] / width, self.full_size[1] / height])
        return (points + 0.5) * scale - 0.5


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def match_size(size: tuple[int, int], max_side: int, multiple: int = 1) -> tuple[int, int]:
    """(width, height) with the long side at most `max_side` (never enlarged), each a multiple."""
    width, height = size
    scale = min(1.0, max_side / max(width, height))
    return tuple(
        max(multiple, int(round(s * scale / multiple)) * multiple) for s in (width, height)
    )


def prepare(path: Path, max_side: int, multiple: int = 1, sha256: str | None = None) -> MatchImage:
    image = load_image(path)
    gray = image.convert("L").resize(
        match_size(image.size, max_side, multiple), Image.Resampling.LANCZOS
    )
    return MatchImage(path.name, sha256 or file_sha256(path), image.size, np.asarray(gray))


class _Memo:
    """A few recent per-image results (features), keyed by content hash."""

    def __init__(self, size: int = 8):
        self.size, self.items = size, OrderedDict()

    def get(self, image: MatchImage, compute):
        if image.sha256 in self.items:
            self.items.move_to_end(image.sha256)
            return self.items[image.sha256]
        value = compute(image)
        self.items[image.sha256] = value
        if len(self.items) > self.size:
            self.items.popitem(last=False)
        return value


# ---------------------------------------------------------------------------------------------
# Matchers: match(reference, candidate) -> (N, 2) candidate keypoints of accepted
# correspondences, in the candidate's on-disk pixel coordinates.
# ---------------------------------------------------------------------------------------------
class SiftMatcher:
    """Weight-free: OpenCV SIFT, Lowe's ratio test, then RANSAC on the fundamental matrix (so
    a 3D scene seen from another viewpoint verifies); the inliers are the correspondences."""

    name = "sift"
    multiple = 1

    def __init__(
        self,
        max_side: int = MAX_SIDE["sift"],
        ratio: float = SIFT_RATIO,
        ransac_threshold: float = RANSAC_THRESHOLD,
    ):
        import cv2

        self.cv2 = cv2
        self.max_side, self.ratio, self.ransac_threshold = max_side, ratio, ransac_threshold
        self.sift = cv2.SIFT_create()
        self.memo = _Memo()

    def settings(self) -> dict:
        """What changes the answer: the JSON records it and the pair cache keys on it."""
        return {
            "matcher": self.name,
            "model_type": None,
            "conf_threshold": None,
            "max_side": self.max_side,
            "weights": None,
            "weights_sha256": None,
            "sift_ratio": self.ratio,
            "ransac_threshold": self.ransac_threshold,
            "min_matches": MIN_MATCHES,
            "device": "cpu",
            "library": f"opencv {self.cv2.__version__}",
        }

    def _features(self, image: MatchImage):
        keypoints, descriptors = self.sift.detectAndCompute(image.gray, None)
        points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2)
        return points, descriptors

    def _tentative(self, reference: MatchImage, candidate: MatchImage):
        """(ref_xy, cand_xy), each (N, 2) at the matching size: ratio-test matches."""
        ref_points, ref_desc = self.memo.get(reference, self._features)
        cand_points, cand_desc = self.memo.get(candidate, self._features)
        if ref_desc is None or cand_desc is None or len(ref_desc) < 2:
            return np.zeros((0, 2)), np.zeros((0, 2))
        pairs = self.cv2.BFMatcher(self.cv2.NORM_L2).knnMatch(cand_desc, ref_desc, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < self.ratio * p[1].distance]
        return ref_points[[m.trainIdx for m in good]], cand_points[[m.queryIdx for m in good]]

    def pairs(self, reference: MatchImage, candidate: MatchImage):
        """(ref_xy, cand_xy) in on-disk pixels, before any geometric check (geometry.py fits
        its own homographies)."""
        ref_xy, cand_xy = self._tentative(reference, candidate)
        return reference.to_full(ref_xy), candidate.to_full(cand_xy)

    def match(self, reference: MatchImage, candidate: MatchImage) -> np.ndarray:
        ref_xy, cand_xy = self._tentative(reference, candidate)
        if len(ref_xy) < MIN_MATCHES:
            return np.zeros((0, 2))
        _, inliers = self.cv2.findFundamentalMat(
            cand_xy, ref_xy, self.cv2.FM_RANSAC, self.ransac_threshold, 0.999, 10000
        )
        if inliers is None:
            return np.zeros((0, 2))
        return candidate.to_full(cand_xy[inliers.ravel().astype(bool)])


def _kornia_cache_file(model_type: str) -> Path:
    """Where kornia keeps a downloaded LoFTR checkpoint (the torch hub cache)."""
    import torch
    from kornia.feature.loftr.loftr import urls

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urls[model_type][0]).name


def _no_weights(model_type: str, why: str) -> RankingAborted:
    return RankingAborted(
        f"LoFTR '{model_type}' weights are not available ({why}). Either pass a local "
        f"checkpoint with --loftr_weights PATH (or set {WEIGHTS_ENV}), e.g. kornia's "
        f"loftr_{model_type}.ckpt, or use the weight-free matcher with --matcher sift"
    )


def resolve_loftr_weights(weights: str | None, model_type: str) -> str:
    """Path of a LoFTR checkpoint, or RANDOM_WEIGHTS; fails in seconds when none can be had.

    Order: `weights` (--loftr-weights), $REALFILL_LOFTR_WEIGHTS, kornia's cached download,
    then kornia's download unless HF_HUB_OFFLINE is set or the host cannot be reached.
    """
    weights = weights or os.environ.get(WEIGHTS_ENV) or None
    if weights == RANDOM_WEIGHTS:
        return RANDOM_WEIGHTS
    if weights:
        path = Path(weights).expanduser()
        if path.is_dir():
            raise RankingAborted(
                f"{path} is a folder: --loftr_weights (or {WEIGHTS_ENV}) takes the checkpoint "
                f"file itself, e.g. {path / f'loftr_{model_type}.ckpt'}"
            )
        if not path.is_file():
            raise RankingAborted(
                f"{path}: LoFTR checkpoint not found (given by --loftr_weights or {WEIGHTS_ENV}); "
                f"pass the path of a loftr_{model_type}.ckpt file, or use --matcher sift"
            )
        return str(path.resolve())
    cached = _kornia_cache_file(model_type)
    if cached.is_file():
        return str(cached)
    if hub_offline():
        raise _no_weights(model_type, f"HF_HUB_OFFLINE is set and {cached} does not exist")
    from kornia.feature.loftr.loftr import urls

    try:  # a quick probe, so that an offline machine fails now, not after minutes of retries
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError as err:
        raise _no_weights(model_type, f"cannot reach huggingface.co: {err}") from None
    from kornia.core.download import download_file_from_url

    try:
        return download_file_from_url(urls[model_type], timeout=20)
    except Exception as err:  # kornia raises RuntimeError, ValueError, ...; all mean "not here"
        raise _no_weights(
            model_type, f"download failed: {str(err).splitlines()[0][:200]}"
        ) from None


def load_loftr(weights: str, model_type: str, device: str):
    """kornia LoFTR built without a download, then given `weights` (a checkpoint path)."""
    import torch
    from kornia.feature import LoFTR

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # so that RANDOM_WEIGHTS are the same in every run
        model = LoFTR(pretrained=None)
    if weights != RANDOM_WEIGHTS:
        try:
            checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
            state = checkpoint.get("state_dict", checkpoint)
            state = {k.removeprefix("matcher."): v for k, v in state.items()}
            model.load_state_dict(state)
        except Exception as err:
            why = (str(err).strip().splitlines() or ["empty or truncated file"])[0][:200]
            raise RankingAborted(
                f"{weights}: not a LoFTR checkpoint kornia can load ({type(err).__name__}: "
                f"{why}); pass kornia's loftr_{model_type}.ckpt"
            ) from None
    return model.eval().to(device)


class LoftrMatcher:
    """kornia LoFTR; each image's backbone features are computed once and reused for all of
    its pairs. Correspondences above `conf_threshold` count (no geometric check, as LoFTR's
    confidence is what the paper ranks by)."""

    name = "loftr"
    multiple = 8  # LoFTR's coarse stride

    def __init__(
        self,
        weights: str | None = None,
        model_type: str = "outdoor",
        conf_threshold: float = CONF_THRESHOLD,
        max_side: int = MAX_SIDE["loftr"],
        device: str | None = None,
    ):
        import torch

        if model_type not in MODEL_TYPES:
            raise SceneError(f"unknown LoFTR model type '{model_type}': use one of {MODEL_TYPES}")
        self.torch = torch
        self.weights = resolve_loftr_weights(weights, model_type)
        self.weights_sha256 = (
            RANDOM_WEIGHTS if self.weights == RANDOM_WEIGHTS else file_sha256(self.weights)
        )
        self.model_type, self.conf_threshold, self.max_side = model_type, conf_threshold, max_side
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = None  # loaded on the first pair the cache does not hold
        self.memo = _Memo()

    def settings(self) -> dict:
        return {
            "matcher": self.name,
            "model_type": self.model_type,
            "conf_threshold": self.conf_threshold,
            "max_side": self.max_side,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "device": self.device,
            "library": f"kornia {version('kornia')}, torch {version('torch')}",
        }

    def _features(self, image: MatchImage):
        tensor = (
            self.torch.from_numpy(image.gray.copy()).to(self.device, self.torch.float32) / 255.0
        )
        return self.model.extract_features(tensor[None, None])

    def pairs(self, reference: MatchImage, candidate: MatchImage):
        """(ref_xy, cand_xy) in on-disk pixels: the correspondences above the threshold."""
        if self.model is None:
            self.model = load_loftr(self.weights, self.model_type, self.device)
        with self.torch.inference_mode():
            ref_features = self.memo.get(reference, self._features)
            cand_features = self.memo.get(candidate, self._features)
            out = self.model({"features0": ref_features, "features1": cand_features})
        keep = out["confidence"] > self.conf_threshold
        points = [
            out[k][keep].cpu().numpy().astype(np.float64) for k in ("keypoints0", "keypoints1")
        ]
        return reference.to_full(points[0]), candidate.to_full(points[1])

    def match(self, reference: MatchImage, candidate: MatchImage) -> np.ndarray:
        return self.pairs(reference, candidate)[1]


def make_matcher(
    matcher: str = "loftr",
    *,
    weights: str | None = None,
    model_type: str = "outdoor",
    conf_threshold: float = CONF_THRESHOLD,
    max_side: int | None = None,
):
    """A matcher by name; `max_side` None = that matcher's MAX_SIDE."""
    if matcher not in MATCHERS:
        raise SceneError(f"unknown matcher '{matcher}': use one of {', '.join(MATCHERS)}")
    max_side = max_side or MAX_SIDE[matcher]
    if matcher == "sift":
        return SiftMatcher(max_side=max_side)
    return LoftrMatcher(weights, model_type, conf_threshold, max_side)


def check_matcher(matcher: str, weights: str | None = None, model_type: str = "outdoor"):
    """make_matcher, and for LoFTR its checkpoint loaded once on the CPU, so that a runner's
    ranking stage cannot fail on a truncated or foreign file after its training."""
    made = make_matcher(matcher, weights=weights, model_type=model_type)
    if matcher == "loftr" and made.weights != RANDOM_WEIGHTS:
        load_loftr(made.weights, made.model_type, "cpu")
    return made


# ---------------------------------------------------------------------------------------------
# Pair cache: one small JSON file per (reference, candidate, mask, settings), written atomically,
# so concurrent rankers never see a half-written entry and need no lock.
# ---------------------------------------------------------------------------------------------
class PairCache:
    def __init__(self, folder: Path | None):
        self.folder = Path(folder) if folder else None
        self.hits = self.misses = 0

    @staticmethod
    def key(fields: dict) -> str:
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def get(self, fields: dict) -> int | None:
        if self.folder is None:
            return None
        try:
            entry = json.loads((self.folder / f"{self.key(fields)}.json").read_text())
            count = entry["count"] if entry["fields"] == fields else None
        except (OSError, ValueError, KeyError, TypeError):
            count = None  # missing or unreadable entries are recomputed, never trusted
        if count is None:
            self.misses += 1
        else:
            self.hits += 1
        return count

    def put(self, fields: dict, count: int) -> None:
        if self.folder is not None:
            atomic_write_json(
                {"fields": fields, "count": count}, self.folder / f"{self.key(fields)}.json"
            )


# ---------------------------------------------------------------------------------------------
# Ranking
# ---------------------------------------------------------------------------------------------
def dilate(fill_mask: np.ndarray, pixels: float) -> np.ndarray:
    """fill_mask (True = fill) grown by `pixels` (Euclidean)."""
    if pixels <= 0:
        return fill_mask
    from scipy.ndimage import distance_transform_edt

    return distance_transform_edt(~fill_mask) <= pixels


def check_aspect(fill_mask: np.ndarray, size: tuple[int, int]) -> None:
    """SceneError unless an image of `size` has the mask's aspect ratio (within 2%)."""
    height, width = fill_mask.shape
    if abs(size[0] / size[1] - width / height) > 0.02 * width / height:
        raise SceneError(
            f"is {size[0]}x{size[1]} but the mask is {width}x{height}, another aspect "
            "ratio: rank completions of this target with the target's own mask"
        )


def mask_for(fill_mask: np.ndarray, size: tuple[int, int], dilation: float) -> np.ndarray:
    """The dilated fill mask at a completion's (width, height); raises if the aspect differs."""
    height, width = fill_mask.shape
    if (width, height) != tuple(size):
        check_aspect(fill_mask, size)
        resized = Image.fromarray(fill_mask).resize(size, Image.Resampling.NEAREST)
        fill_mask = np.asarray(resized)
    return dilate(fill_mask, dilation)


def count_inside(points: np.ndarray, region: np.ndarray) -> int:
    """How many (x, y) points fall on True pixels of `region`."""
    if len(points) == 0:
        return 0
    height, width = region.shape
    x = np.clip(np.floor(points[:, 0] + 0.5).astype(int), 0, width - 1)
    y = np.clip(np.floor(points[:, 1] + 0.5).astype(int), 0, height - 1)
    return int(region[y, x].sum())


def median_distances(paths: list[Path], fill_mask: np.ndarray) -> dict[str, float]:
    """name -> root-mean-square distance (8-bit levels, RGB) inside the fill region between
    each readable completion and the per-pixel median of all of them, compared at no more than
    AGREEMENT_SIDE px on the long side (a pixel counts where any part of it is in the hole).
    Equal correspondence counts say nothing about which completion is better; the one nearest
    the median is the least idiosyncratic, so the ranking puts it first among them. Empty with
    fewer than 3 readable completions (the median of two is their mean and singles out
    neither)."""
    height, width = fill_mask.shape
    size = match_size((width, height), AGREEMENT_SIDE)
    # a pixel is compared where any part of it is filled: a thin or small hole never vanishes
    area = Image.fromarray(fill_mask.astype(np.uint8) * 255).resize(size, Image.Resampling.BOX)
    region = np.asarray(area) > 0
    pixels = {}
    for path in paths:
        try:
            image = load_image(path).resize(size, Image.Resampling.BILINEAR)
        except Exception:  # unreadable: the matching names the problem in its row
            continue
        pixels[path.name] = np.asarray(image)[region].astype(np.float32)
    if len(pixels) < 3 or not region.any():
        return {}
    median = np.median(np.stack(list(pixels.values())), axis=0)
    return {
        name: round(float(np.sqrt(np.mean((values - median) ** 2))), 3)
        for name, values in pixels.items()
    }


def _error_text(err: BaseException) -> str:
    text = str(err).splitlines()[0][:300] if str(err) else ""
    return text if isinstance(err, SceneError) else f"{type(err).__name__}: {text}"


def rank_completions(
    candidate_paths: list[Path],
    reference_paths: list[Path],
    fill_mask: np.ndarray,
    matcher,
    *,
    mask_dilation: float = MASK_DILATION,
    cache: PairCache | None = None,
    progress: bool = True,
) -> dict:
    """Score each completion against every reference; return the scores document (see docs).

    fill_mask: bool (H, W), True = filled region, at the target's size. A candidate whose
    matching fails gets `error` (score null), never a silent 0. An unreadable reference or an
    unavailable matcher aborts the whole ranking (RankingAborted).
    """
    from tqdm.auto import tqdm

    cache = cache or PairCache(None)
    settings = matcher.settings() | {"mask_dilation": mask_dilation}
    mask_sha = hashlib.sha256(
        np.packbits(fill_mask).tobytes() + str(fill_mask.shape).encode()
    ).hexdigest()
    base_fields = {"cache_version": CACHE_VERSION, "mask_sha256": mask_sha, **settings}
    base_fields.pop("weights")  # the path does not change the answer; its hash does
    names = [p.name for p in reference_paths]
    if len(set(names)) != len(names):
        raise RankingAborted("two references share a file name: give each its own name")
    references = {p.name: (p, file_sha256(p)) for p in reference_paths}
    prepared: dict[str, MatchImage] = {}  # references are decoded once, on the first miss

    def reference(name: str) -> MatchImage:
        if name not in prepared:
            path, sha = references[name]
            try:
                prepared[name] = prepare(path, matcher.max_side, matcher.multiple, sha)
            except SceneError as err:
                raise RankingAborted(f"reference {err}") from None
        return prepared[name]

    def score(path: Path, sha: str) -> dict[str, int]:
        candidate, region, counts = None, None, {}
        for name in names:
            fields = base_fields | {
                "reference_sha256": references[name][1],
                "candidate_sha256": sha,
            }
            count = cache.get(fields)
            if count is None:
                if candidate is None:  # decoded only when some pair is not cached
                    candidate = prepare(path, matcher.max_side, matcher.multiple, sha)
                    region = mask_for(fill_mask, candidate.full_size, mask_dilation)
                ref = reference(name)
                try:
                    count = count_inside(matcher.match(ref, candidate), region)
                except RankingAborted:
                    raise
                except Exception as err:
                    raise RuntimeError(f"matching against {name}: {_error_text(err)}") from err
                cache.put(fields, count)
            counts[name] = count
            bar.update()
        return counts

    rows = []
    bar = tqdm(
        total=len(candidate_paths) * len(names),
        desc="ranking pairs",
        unit="pair",
        disable=None if progress else True,  # None: only on a terminal
        leave=False,
    )
    for path in candidate_paths:
        row = {"image": path.name, "sha256": None, "score": None, "per_reference": {},
               "error": None}  # fmt: skip
        try:
            row["sha256"] = file_sha256(path)
            row["per_reference"] = score(path, row["sha256"])
            row["score"] = sum(row["per_reference"].values())
        except RankingAborted:
            raise
        except Exception as err:  # any failure of this candidate is reported, not counted as 0
            row["error"] = f"{path.name}: {_error_text(err)}"
        rows.append(row)
    bar.close()
    # the median is of the completions that were ranked: a failed one (another aspect ratio,
    # stretched to fit) neither moves it nor makes up the three it needs
    ranked = [p for p, row in zip(candidate_paths, rows, strict=True) if row["error"] is None]
    distances = median_distances(ranked, fill_mask)
    for row in rows:
        row["median_rms"] = distances.get(row["image"]) if row["error"] is None else None
    rows.sort(
        key=lambda r: (
            r["error"] is not None,
            -(r["score"] or 0),
            math.inf if r["median_rms"] is None else r["median_rms"],
            natural_key(r["image"]),
        )
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "settings": settings,
        "tie_break": RANKING_TIE_BREAK,
        "references": names,
        "reference_sha256": {name: sha for name, (_, sha) in references.items()},
        "candidates": rows,
    }


# ---------------------------------------------------------------------------------------------
# Selection (ReFill) is built by scene_engine.py, next to the stages that use it
# ---------------------------------------------------------------------------------------------
_MOVED = ("build_refill_scene", "choose", "NothingToAdd", "SELECTION_FILE", "REFILL_PREFIX")


def __getattr__(name: str):
    """The ReFill names that moved to scene_engine, still importable from here."""
    if name in _MOVED:
        import scene_engine

        return getattr(scene_engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def is_ranking_file(path: Path) -> bool:
    """Whether `path` holds a scores document this script wrote (it may overwrite only those)."""
    try:
        data = json.loads(Path(path).read_text())
        return data.get("schema_version") == SCHEMA_VERSION and "candidates" in data
    except (OSError, ValueError, AttributeError):
        return False


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument(
        "--source-dir",
        "--source_dir",
        type=Path,
        required=True,
        help="folder of completions to rank (0.png, 1.png, ...)",
    )
    parser.add_argument(
        "--ref-dir",
        "--ref_dir",
        type=Path,
        required=True,
        help="the scene's reference folder (any image type and size)",
    )
    parser.add_argument(
        "--mask",
        type=Path,
        default=None,
        help="the target's mask.png, white = filled region; default: <ref-dir>/../target/mask.png",
    )
    parser.add_argument(
        "--rank-only",
        "--rank_only",
        action="store_true",
        help="only write the scores; default is selection, which needs "
        "--target-count and --output-scene-dir",
    )
    parser.add_argument(
        "--ranking-output-file",
        "--ranking_output_file",
        type=Path,
        default=None,
        help=f"scores JSON; default: <source-dir>/{SCORES_FILE} with --rank-only, "
        f"<output-scene-dir>/{SCORES_FILE} otherwise",
    )
    parser.add_argument(
        "--target-count",
        "--target_count",
        type=positive_int,
        default=None,
        help="selection: references wanted in all (originals + chosen), e.g. 5",
    )
    parser.add_argument(
        "--output-scene-dir",
        "--output_scene_dir",
        type=Path,
        default=None,
        help="selection: the new scene folder to build (outside the dataset)",
    )
    parser.add_argument(
        "--matcher",
        choices=MATCHERS,
        default="loftr",
        help="loftr needs weights; sift is weight-free",
    )
    parser.add_argument(
        "--model-type",
        "--model_type",
        choices=MODEL_TYPES,
        default="outdoor",
        help="which kornia LoFTR checkpoint",
    )
    parser.add_argument(
        "--loftr-weights",
        "--loftr_weights",
        default=None,
        help=f"local LoFTR checkpoint (.ckpt); also ${WEIGHTS_ENV}. "
        f"'{RANDOM_WEIGHTS}' = untrained, for smoke tests only",
    )
    parser.add_argument(
        "--conf-threshold",
        "--conf_threshold",
        type=float,
        default=CONF_THRESHOLD,
        help="LoFTR confidence a correspondence needs to count",
    )
    parser.add_argument(
        "--max-side",
        "--max_side",
        type=int,
        default=None,
        help="long side (px) images are resized to for matching; default: "
        + ", ".join(f"{k} {v}" for k, v in MAX_SIDE.items()),
    )
    parser.add_argument(
        "--mask-dilation",
        "--mask_dilation",
        type=float,
        default=MASK_DILATION,
        help="grow the fill region by this many px before counting",
    )
    parser.add_argument(
        "--cache-dir",
        "--cache_dir",
        type=Path,
        default=None,
        help=f"pair cache folder; default <source-dir>/{CACHE_DIR_NAME}",
    )
    parser.add_argument(
        "--no-cache", "--no_cache", action="store_true", help="neither read nor write the cache"
    )
    args = parser.parse_args(argv)
    if not args.rank_only and (args.target_count is None or args.output_scene_dir is None):
        parser.error("selection needs --target-count and --output-scene-dir (or pass --rank-only)")
    return args


def summary(ranking: dict) -> str:
    scored = [c for c in ranking["candidates"] if c["error"] is None]
    top = ", ".join(f"{c['image']}={c['score']}" for c in scored[:5])
    failed = len(ranking["candidates"]) - len(scored)
    return f"{len(scored)} ranked, best: {top or '-'}" + (f"; {failed} FAILED" if failed else "")


def run(args: argparse.Namespace) -> int:
    """Rank the completions against the references; write the scores, or the ReFill scene."""
    from scene_engine import build_refill_scene, check_refill_scene_dir

    if not args.source_dir.is_dir():
        raise SceneError(f"{args.source_dir}: completions folder (--source-dir) not found")
    if not args.ref_dir.is_dir():
        raise SceneError(f"{args.ref_dir}: reference folder (--ref-dir) not found")
    mask_path = args.mask or args.ref_dir.parent / "target" / "mask.png"
    if not mask_path.is_file():
        raise SceneError(f"{mask_path}: mask not found; pass the target's mask with --mask")
    # what is only read: the references and the scenes of the references and of the mask
    # (<scene>/ref, <scene>/target)
    inputs = {"the references": args.ref_dir}
    for folder in (args.ref_dir.parent, mask_path.parent.parent):
        if (folder / "ref").is_dir() and (folder / "target").is_dir():
            inputs["the scene" if folder == args.ref_dir.parent else "the mask's scene"] = folder
    for what, folder in inputs.items():
        if overlaps(args.source_dir, folder):
            raise SceneError(
                f"--source-dir {args.source_dir} overlaps {what} {folder}: pass the folder of "
                "completions (0.png, 1.png, ...) that infer.py wrote"
            )
    for what, folder in inputs.items():
        if args.cache_dir is not None and not args.no_cache and overlaps(args.cache_dir, folder):
            raise SceneError(f"--cache-dir {args.cache_dir} overlaps {what} {folder}: put the "
                             "cache outside it")  # fmt: skip
    scores_file = args.ranking_output_file
    if scores_file is None and args.rank_only:
        scores_file = args.source_dir / SCORES_FILE
    if scores_file is not None:
        claim_output_file(scores_file, SCRIPT, is_ranking_file, inputs, "--ranking-output-file")
    images, _ = list_images(args.source_dir)
    # infer.py's completions are 0.png, 1.png, ...; other images beside them (a warp fill's
    # uncertainty.png) are not candidates. A folder without numbered images is ranked whole.
    candidates = ranked_images(args.source_dir)
    if len(candidates) < len(images):
        others = [p for p in images if p not in candidates]
        note(f"{args.source_dir}: ranking the numbered completions only, not {names_of(others)}")
    references, ignored = list_images(args.ref_dir)
    if ignored:
        note(f"{args.ref_dir}: ignoring hidden or non-image entries: {names_of(ignored)}")
    if not candidates:
        raise SceneError(f"{args.source_dir}: no completions (images such as 0.png) found")
    if not references:
        raise SceneError(f"{args.ref_dir}: no reference images found")
    fill_mask = load_mask(mask_path)
    check_mask(fill_mask, mask_path, fill_mask.shape[::-1])
    for path in references:  # headers only: an unreadable file is named now, not after matching
        image_size(path)
    for path in candidates:
        try:
            check_aspect(fill_mask, image_size(path))
        except SceneError as err:
            raise SceneError(f"{path} {err} (the mask: {mask_path})") from None
    if not args.rank_only:  # the new scene's folder and its count, before any matching
        check_refill_scene_dir(args.ref_dir, args.source_dir, args.output_scene_dir)
    matcher = make_matcher(
        args.matcher,
        weights=args.loftr_weights,
        model_type=args.model_type,
        conf_threshold=args.conf_threshold,
        max_side=args.max_side,
    )
    cache = PairCache(None if args.no_cache else args.cache_dir or args.source_dir / CACHE_DIR_NAME)
    start = time.perf_counter()
    ranking = rank_completions(
        candidates,
        references,
        fill_mask,
        matcher,
        mask_dilation=args.mask_dilation,
        cache=cache,
    )
    ranking["settings"]["mask"] = str(mask_path.resolve())
    ranking["mask_sha256"] = file_sha256(mask_path)
    seconds = time.perf_counter() - start
    print(
        f"{args.matcher}: {summary(ranking)} ({len(candidates)}x{len(references)} pairs, "
        f"{cache.hits} cached, {seconds:.1f} s)"
    )
    if args.rank_only:
        out = args.ranking_output_file or args.source_dir / SCORES_FILE
        atomic_write_json(ranking, out)
        print(f"scores: {out}")
    else:
        record = build_refill_scene(
            args.ref_dir,
            args.ref_dir.parent / "target",
            args.source_dir,
            ranking,
            args.target_count,
            args.output_scene_dir,
        )
        if args.ranking_output_file:
            atomic_write_json(ranking, args.ranking_output_file)
        chosen = ", ".join(f"{c['image']} ({c['score']})" for c in record["chosen"]) or "none"
        print(
            f"scene: {args.output_scene_dir} ({len(record['original_references'])} "
            f"original + chosen: {chosen})"
        )
    return EXIT_OK if any(c["error"] is None for c in ranking["candidates"]) else EXIT_FAILED


def main(argv=None) -> int:
    args = parse_args(argv)
    from scene_engine import NothingToAdd

    return run_main(lambda: run(args), failed={NothingToAdd: "error: {err}"})


if __name__ == "__main__":
    sys.exit(main())
