"""DreamSim distance between the full result and the full ground truth (lower is better).

dreamsim 0.2.1, variant --variant / $REALFILL_DREAMSIM_TYPE (default "ensemble": DINO ViT-B/16 +
CLIP ViT-B/16 + OpenCLIP ViT-B/16 with DreamSim's LoRA); images resized to 224x224.
Weights: --weights / $REALFILL_DREAMSIM_WEIGHTS, a folder as dreamsim(cache_dir=...) fills it
(checkpoints, the *_lora folder and, for DINO-based variants, torch.hub's
facebookresearch_dino_main); default <torch hub dir>/dreamsim, downloaded when online. Example:
    REALFILL_DREAMSIM_WEIGHTS=~/weights/dreamsim python -m benchmark.dreamsim_metric \
        --jobs_file jobs.jsonl
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.common import (  # noqa: E402
    EMBED_SIZE,
    METRICS,
    Item,
    MetricUnavailable,
    run_metric,
    to_tensor,
    torch_hub_dir,
)
from realfill_utils import hub_offline  # noqa: E402

SPEC = METRICS["DreamSim"]
# The files dreamsim 0.2.1 needs in its cache folder before it would download anything.
REQUIRED = {
    "ensemble": [
        "dino_vitb16_pretrain.pth",
        "open_clip_vitb16_pretrain.pth.tar",
        "clip_vitb16_pretrain.pth.tar",
        "ensemble_lora",
    ],
    "dino_vitb16": ["dino_vitb16_pretrain.pth", "dino_vitb16_single_lora"],
    "open_clip_vitb32": ["open_clip_vitb32_pretrain.pth.tar", "open_clip_vitb32_single_lora"],
    "clip_vitb32": ["clip_vitb32_pretrain.pth.tar", "clip_vitb32_single_lora"],
}


def default_dir() -> Path:
    return torch_hub_dir() / "dreamsim"


def locate(weights: str | None, variant: str = "ensemble") -> Path:
    """The cache folder to load from; MetricUnavailable, without loading anything, where its
    files are missing and cannot be downloaded."""
    if variant not in REQUIRED:
        raise MetricUnavailable(f"unknown DreamSim variant '{variant}': use {', '.join(REQUIRED)}")
    folder = Path(weights).expanduser() if weights else default_dir()
    missing = [name for name in REQUIRED[variant] if not (folder / name).exists()]
    if missing and (weights or hub_offline()):
        raise MetricUnavailable(
            f"DreamSim '{variant}' files missing in {folder}: {', '.join(missing)}; set "
            "REALFILL_DREAMSIM_WEIGHTS to a folder filled by dreamsim(cache_dir=...) online"
        )
    return folder


def load_dreamsim(weights: str | None, variant: str = "ensemble", device: str = "cpu"):
    """DreamSim model from its cache folder; offline, missing files make it unavailable."""
    import contextlib

    folder = locate(weights, variant)
    import torch
    from dreamsim import dreamsim

    hub_dir = torch.hub.get_dir()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # dreamsim prints progress
            model, _ = dreamsim(
                pretrained=True, device=device, cache_dir=str(folder), dreamsim_type=variant
            )
    finally:
        torch.hub.set_dir(hub_dir)  # dreamsim points torch.hub at its cache folder
    return model


def build(args):
    model = load_dreamsim(args.weights, args.variant, args.device)
    import torch

    gt_cache: dict = {}

    def score(item: Item) -> float:
        with torch.inference_mode():
            if gt_cache.get("path") != item.gt_path:
                gt_cache.update(path=item.gt_path, embed=model.embed(prep(item.gt)))
            result = model.embed(prep(item.result))
            return float(1 - torch.nn.functional.cosine_similarity(gt_cache["embed"], result))

    def prep(image):
        return to_tensor(image, EMBED_SIZE).to(args.device)

    return score


if __name__ == "__main__":
    sys.exit(run_metric(SPEC, build, __doc__))
