"""LPIPS inside the filled region: the mean of LPIPS's spatial distance map over mask = 1.

AlexNet backbone, LPIPS v0.1 linear heads (shipped inside the lpips package), inputs in [-1, 1]
at the ground truth's size; the result's known region is replaced by the ground truth's first.
Backbone weights: --weights / $REALFILL_LPIPS_WEIGHTS (a torchvision AlexNet state dict, e.g.
alexnet-owt-7be5be79.pth, or a whole lpips.LPIPS state dict), else torchvision's cache
(downloaded when online). Example:
    REALFILL_LPIPS_WEIGHTS=~/weights/alexnet-owt-7be5be79.pth python -m benchmark.lpips_metric \
        --jobs_file jobs.jsonl
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.common import (  # noqa: E402
    METRICS,
    Item,
    MetricUnavailable,
    load_state_dict,
    run_metric,
    torch_hub_file,
)
from realfill_utils import hub_offline  # noqa: E402

SPEC = METRICS["LPIPS"]
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's ImageNet AlexNet checkpoint


def locate(weights: str | None, variant: str | None = None) -> str | None:
    """The AlexNet checkpoint to load (None: download it); MetricUnavailable, without loading
    anything, where there is none to be had."""
    if weights is not None:
        if not Path(weights).expanduser().is_file():
            raise MetricUnavailable(f"weights file {weights} not found")
        return weights
    cached = torch_hub_file(ALEXNET_FILE)
    if cached.is_file():
        return str(cached)
    if hub_offline():
        raise MetricUnavailable(
            f"AlexNet weights are not in torchvision's cache ({cached}) and HF_HUB_OFFLINE=1; "
            "set REALFILL_LPIPS_WEIGHTS to a local alexnet-owt-7be5be79.pth"
        )
    return None


def load_lpips(weights: str | None, device: str = "cpu"):
    """lpips.LPIPS(net='alex', spatial=True) with its backbone from `weights` or the cache."""
    import warnings

    weights = locate(weights)
    download = weights is None
    import lpips
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's "pretrained is deprecated" noise
        model = lpips.LPIPS(net="alex", version="0.1", spatial=True, pnet_rand=True, verbose=False)
    if download:
        from torchvision.models import AlexNet_Weights

        state = torch.hub.load_state_dict_from_url(
            AlexNet_Weights.IMAGENET1K_V1.url, progress=False
        )
        load_backbone(model, state)
        return model.eval().to(device)
    load_backbone(model, load_state_dict(weights))
    return model.eval().to(device)


def load_backbone(model, state: dict) -> None:
    """Load a torchvision AlexNet state dict (features.*) or a whole LPIPS state dict."""
    if any(k.startswith("net.") for k in state):
        model.load_state_dict(state)
        return
    # lpips splits alexnet.features into slices whose children keep the features' indices.
    mapped = {}
    for name, _ in model.net.named_parameters():
        index_and_param = name.split(".", 1)[1]  # "slice1.0.weight" -> "0.weight"
        source = f"features.{index_and_param}"
        if source not in state:
            raise MetricUnavailable(f"LPIPS weights lack '{source}': not an AlexNet state dict")
        mapped[name] = state[source]
    model.net.load_state_dict(mapped)


def build(args):
    model = load_lpips(args.weights, args.device)
    import torch

    def score(item: Item) -> float:
        def prep(image):
            return (
                torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
            ).to(args.device)

        with torch.inference_mode():
            distance = model(prep(item.gt), prep(item.result_with_known_from_gt()))[0, 0]
        return float(distance[torch.from_numpy(item.fill_mask).to(args.device)].mean())

    return score


if __name__ == "__main__":
    sys.exit(run_metric(SPEC, build, __doc__))
