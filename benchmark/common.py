"""What every metric script shares: the metric registry, the job and result line formats, image
loading at the ground truth's size, and the loop that loads a model once and streams scores.

Job lines (one JSON object per line, from `--jobs_file` or stdin):
    {"id": "<any string>", "gt": "<path>", "mask": "<path>", "result": "<path>"}
Result lines (one JSON object per line on stdout, flushed as each score is ready):
    {"event": "ready", "metric": "SSIM", "version": "1", "params": {...}}      (first line)
    {"event": "score", "id": "...", "value": 0.81, "resized": false, "seconds": 0.02}
    {"event": "error", "id": "...", "error": "<what went wrong with this item>"}
    {"event": "unavailable", "metric": "LPIPS", "reason": "<why and how to fix>"}  (then exit 3)
`resized` is true when the result's size differed from the ground truth's and it was resized to
it; `seconds` is the time spent on this item (decoding included); `load_s` in the ready line
is the model-loading time. PSNR of identical images is `Infinity` (Python's json reads and
writes it).

Conventions: images are uint8 RGB arrays (H, W, 3); `fill_mask` is bool (H, W), True = filled
region (white in mask.png).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmark/psnr.py` puts benchmark/ first, not the root
    sys.path.insert(0, str(ROOT))

import realfill_utils as ru  # noqa: E402
from realfill_utils import (  # noqa: E402
    SceneError,
    hub_offline,
    load_image,
    load_mask,
)

UNAVAILABLE_EXIT = 3  # exit status of a metric script whose model cannot be loaded here
EMBED_SIZE = 224  # input size of the DINO / CLIP / DreamSim image encoders


@dataclass(frozen=True)
class MetricSpec:
    """One metric: how to run it, which way is better, and what it measures exactly."""

    name: str
    module: str  # python -m benchmark.<module>
    higher_is_better: bool
    version: str  # bump when the computation changes: it is part of every cache key
    definition: str
    params: dict = field(default_factory=dict)
    weights_env: str | None = None  # environment variable naming local weights
    variant_env: str | None = None  # environment variable choosing the model variant
    default_variant: str | None = None

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    def variant(self) -> str | None:
        if self.variant_env:
            return os.environ.get(self.variant_env) or self.default_variant
        return self.default_variant

    def weights(self) -> str | None:
        if not self.weights_env:
            return None
        return os.environ.get(self.weights_env) or None

    def cache_params(self, weights: str | None = None, variant: str | None = None) -> dict:
        """Everything besides the images that decides the value: part of the cache key.
        `weights` and `variant` default to the environment variables."""
        params = dict(self.params)
        if self.weights_env:
            weights = weights or self.weights()
            params["weights"] = str(Path(weights).expanduser().resolve()) if weights else "default"
        if self.variant_env:
            params["variant"] = variant or self.variant()
        return params


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec(
            "PSNR",
            "psnr",
            True,
            "1",
            "10*log10(255^2 / MSE), MSE over the filled pixels (mask = 1) and the 3 RGB "
            "channels, 8-bit values, at the ground truth's size",
            {"data_range": 255},
        ),
        MetricSpec(
            "SSIM",
            "ssim",
            True,
            "1",
            "mean over the filled pixels of the per-pixel SSIM map (7x7 uniform window, sample "
            "covariance, K1=0.01, K2=0.03, reflect border, per RGB channel then averaged; "
            "identical to scikit-image's structural_similarity(full=True) map), computed on "
            "the result with its known region replaced by the ground truth's",
            {"win_size": 7, "k1": 0.01, "k2": 0.03, "data_range": 255},
        ),
        MetricSpec(
            "LPIPS",
            "lpips_metric",
            False,
            "1",
            "mean over the filled pixels of LPIPS's spatial distance map (lpips 0.1.4, "
            "net=alex, version 0.1, spatial=True, inputs in [-1, 1] at the ground truth's size), "
            "on the result with its known region replaced by the ground truth's",
            {"net": "alex", "lpips_version": "0.1"},
            weights_env="REALFILL_LPIPS_WEIGHTS",
        ),
        MetricSpec(
            "DreamSim",
            "dreamsim_metric",
            False,
            "1",
            "DreamSim distance (dreamsim 0.2.1, 1 - cosine similarity of its embeddings) between "
            "the full result and the full ground truth, each resized to 224x224 (bicubic)",
            {},
            weights_env="REALFILL_DREAMSIM_WEIGHTS",
            variant_env="REALFILL_DREAMSIM_TYPE",
            default_variant="ensemble",
        ),
        MetricSpec(
            "DINO",
            "dino",
            True,
            "1",
            "cosine similarity of DINO ViT-S/16 CLS embeddings (timm vit_small_patch16_224.dino, "
            "final-norm CLS token) of the full result and the full ground truth, each resized "
            "to 224x224 (bicubic), ImageNet normalisation",
            {"model": "vit_small_patch16_224.dino"},
            weights_env="REALFILL_DINO_WEIGHTS",
        ),
        MetricSpec(
            "CLIP",
            "clip_metric",
            True,
            "1",
            "cosine similarity of CLIP ViT-B/32 image embeddings (open_clip ViT-B-32-quickgelu, "
            "OpenAI weights) of the full result and the full ground truth, each resized to "
            "224x224 (bicubic), CLIP normalisation",
            {"model": "ViT-B-32-quickgelu", "pretrained": "openai"},
            weights_env="REALFILL_CLIP_WEIGHTS",
        ),
    )
}


class MetricUnavailable(RuntimeError):
    """The metric's model cannot be had here (no weights, offline): report, never guess."""


def unavailable(names) -> dict[str, str]:
    """Metric name -> why it cannot run here, for those of `names` whose weights are missing
    (from the environment's settings; only files and caches are looked at, nothing loaded)."""
    import importlib

    why = {}
    for name in names:
        spec = METRICS[name]
        if not spec.weights_env:  # computed, no model
            continue
        module = importlib.import_module(f"benchmark.{spec.module}")
        try:
            module.locate(spec.weights(), spec.variant())
        except MetricUnavailable as err:
            why[name] = str(err)
    return why


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------
@dataclass
class Item:
    """One (ground truth, mask, result) triple, decoded at the ground truth's size."""

    id: str
    gt_path: Path
    gt: np.ndarray  # uint8 (H, W, 3)
    fill_mask: np.ndarray  # bool (H, W), True = filled region
    result: np.ndarray  # uint8 (H, W, 3), resized to the ground truth's size if needed
    resized: bool

    def result_with_known_from_gt(self) -> np.ndarray:
        """The result inside the fill mask, the ground truth everywhere else."""
        return np.where(self.fill_mask[..., None], self.result, self.gt)


class ItemLoader:
    """Decode items; the ground truth and mask of the last scene are kept, not re-read."""

    def __init__(self):
        self._scene: tuple | None = None

    def load(self, job: dict) -> Item:
        gt_path, mask_path = Path(job["gt"]), Path(job["mask"])
        if self._scene is None or self._scene[0] != (gt_path, mask_path):
            gt = np.asarray(load_image(gt_path))
            fill_mask = load_mask(mask_path)
            if fill_mask.shape != gt.shape[:2]:
                raise SceneError(
                    f"{mask_path} is {fill_mask.shape[1]}x{fill_mask.shape[0]} but {gt_path} is "
                    f"{gt.shape[1]}x{gt.shape[0]}: the mask must match the ground truth's size"
                )
            if not fill_mask.any():
                raise SceneError(f"{mask_path} has no filled pixels (white = filled region)")
            self._scene = ((gt_path, mask_path), gt, fill_mask)
        _, gt, fill_mask = self._scene
        result = load_image(job["result"])
        resized = result.size != (gt.shape[1], gt.shape[0])
        if resized:
            result = result.resize((gt.shape[1], gt.shape[0]), Image.Resampling.LANCZOS)
        return Item(str(job["id"]), gt_path, gt, fill_mask, np.asarray(result), resized)


def to_tensor(image: np.ndarray, size: int | None = None):
    """uint8 (H, W, 3) -> float tensor (1, 3, H, W) in [0, 1], optionally resized to size^2."""
    import torch

    if size is not None:
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255.0  # a copy


class EmbeddingScorer:
    """Cosine similarity of image embeddings; the ground truth's embedding is computed once."""

    def __init__(self, embed: Callable, model=None):
        self.embed = embed  # (1, 3, 224, 224) in [0, 1] -> (1, D)
        self.model = model
        self._gt: tuple | None = None

    @classmethod
    def normalised(cls, forward: Callable, model, mean, std, device) -> EmbeddingScorer:
        """A scorer of `forward` on inputs normalised by the per-channel (RGB) `mean`, `std`."""
        import torch

        mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        return cls(lambda x: forward((x.to(device) - mean) / std), model)

    def __call__(self, item: Item) -> float:
        import torch

        with torch.inference_mode():
            if self._gt is None or self._gt[0] != item.gt_path:
                self._gt = (item.gt_path, self.embed(to_tensor(item.gt, EMBED_SIZE)))
            result = self.embed(to_tensor(item.result, EMBED_SIZE))
            return float(torch.nn.functional.cosine_similarity(self._gt[1], result).item())


# ---------------------------------------------------------------------------------------------
# Loading weights without ever hanging on a network that is not there
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def network_guard():
    """Offline (HF_HUB_OFFLINE=1): any connection attempt fails at once instead of retrying.
    Online: sockets time out after 30 s instead of waiting forever."""
    if not hub_offline():
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(30)
        try:
            yield
        finally:
            socket.setdefaulttimeout(previous)
        return

    def refuse(*args, **kwargs):
        raise OSError("network disabled because HF_HUB_OFFLINE=1")

    saved = socket.socket.connect, socket.getaddrinfo, socket.create_connection
    socket.socket.connect, socket.getaddrinfo, socket.create_connection = refuse, refuse, refuse
    try:
        yield
    finally:
        socket.socket.connect, socket.getaddrinfo, socket.create_connection = saved


def torch_hub_dir() -> Path:
    """torch.hub.get_dir() without importing torch (so "unavailable" is reported at once)."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser() / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "torch" / "hub"


def torch_hub_file(name: str) -> Path:
    """Where torch.hub / torchvision cache a downloaded checkpoint of this file name."""
    return torch_hub_dir() / "checkpoints" / name


def require_hub_cache(repo_id: str, filenames: list[str], weights_env: str) -> None:
    """Offline, fail at once unless one of the files is in the Hugging Face cache."""
    if not hub_offline():
        return
    from huggingface_hub import try_to_load_from_cache

    if any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in filenames):
        return
    raise MetricUnavailable(
        f"{repo_id} is not in the Hugging Face cache and HF_HUB_OFFLINE=1; set {weights_env} "
        "to a local weights file, or run once online to fill the cache"
    )


def load_state_dict(path: str | os.PathLike) -> dict:
    """A state dict from .safetensors, or from a torch file (unwrapping 'state_dict'/'model')."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise MetricUnavailable(f"weights file {path} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


# ---------------------------------------------------------------------------------------------
# The metric-script loop
# ---------------------------------------------------------------------------------------------
def read_jobs(lines: Iterable[str]) -> Iterable[dict]:
    for line in lines:
        if line.strip():
            yield json.loads(line)


def stream(out, record: dict) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


def parse_args(spec: MetricSpec, doc: str, argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=ru.HelpFormatter)
    parser.add_argument(
        "--jobs_file",
        default="-",
        help="JSON-lines file of {id, gt, mask, result} items; '-' reads stdin",
    )
    if spec.weights_env:
        parser.add_argument(
            "--weights",
            default=spec.weights(),
            help=f"local weights (default: ${spec.weights_env}, else the library's own "
            "download cache)",
        )
    if spec.variant_env:
        parser.add_argument(
            "--variant",
            default=spec.variant(),
            help=f"model variant (default: ${spec.variant_env}, else {spec.default_variant})",
        )
    parser.add_argument("--device", default="cpu", help="torch device for learned metrics")
    args = parser.parse_args(argv)
    jobs_file = Path(args.jobs_file)
    if args.jobs_file != "-" and (not jobs_file.exists() or jobs_file.is_dir()):
        parser.error(f"--jobs_file {args.jobs_file}: no such file")  # exit status 2
    return args


def run_metric(
    spec: MetricSpec, build: Callable[[argparse.Namespace], Callable[[Item], float]], doc: str
) -> int:
    """Parse arguments, build the scorer ONCE, score every job, stream one line per job."""
    args = parse_args(spec, doc)
    out = sys.stdout
    sys.stdout = sys.stderr  # libraries that print must not corrupt the result stream
    params = spec.cache_params(getattr(args, "weights", None), getattr(args, "variant", None))
    start = time.perf_counter()
    try:
        with network_guard():
            scorer = build(args)
    except Exception as err:  # anything that stops the model loading makes it unavailable
        reason = str(err) if isinstance(err, MetricUnavailable) else describe(err)
        stream(out, {"event": "unavailable", "metric": spec.name, "reason": reason})
        return UNAVAILABLE_EXIT
    load_s = round(time.perf_counter() - start, 3)
    stream(
        out,
        {"event": "ready", "metric": spec.name, "version": spec.version, "params": params}
        | {"load_s": load_s},
    )
    try:
        score_jobs(args.jobs_file, scorer, out)
    except json.JSONDecodeError as err:
        print(f"error: --jobs_file {args.jobs_file}: not JSON lines ({err})", file=sys.stderr)
        return ru.EXIT_INPUT
    except KeyboardInterrupt:
        return ru.EXIT_INTERRUPTED  # every score streamed so far is already out
    return 0


def score_jobs(jobs_file: str, scorer: Callable[[Item], float], out) -> None:
    """Score every job of `jobs_file` ('-': stdin), one result line each as it is ready."""
    loader = ItemLoader()
    source = sys.stdin if jobs_file == "-" else open(jobs_file)  # noqa: SIM115
    with source:
        for job in read_jobs(source):
            started = time.perf_counter()
            try:
                item = loader.load(job)
                value = float(scorer(item))
            except Exception as err:  # one bad image must not stop the others
                stream(out, {"event": "error", "id": str(job.get("id")), "error": describe(err)})
                continue
            if math.isnan(value):
                stream(out, {"event": "error", "id": item.id, "error": "metric returned NaN"})
                continue
            seconds = round(time.perf_counter() - started, 5)
            stream(
                out,
                {"event": "score", "id": item.id, "value": value, "resized": item.resized}
                | {"seconds": seconds},
            )
