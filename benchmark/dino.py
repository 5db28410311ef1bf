"""DINO similarity: cosine similarity of DINO ViT-S/16 CLS embeddings of the full result and
the full ground truth (each resized to 224x224, ImageNet normalisation).

Weights: --weights / $REALFILL_DINO_WEIGHTS (a ViT-S/16 state dict: timm's
vit_small_patch16_224.dino or the official dino_deitsmall16_pretrain.pth), else timm's hub cache
(downloaded when online). Example:
    python -m benchmark.dino --weights ~/weights/dino_deitsmall16_pretrain.pth \
        --jobs_file jobs.jsonl
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.common import (  # noqa: E402
    METRICS,
    EmbeddingScorer,
    MetricUnavailable,
    describe,
    load_state_dict,
    require_hub_cache,
    run_metric,
)

SPEC = METRICS["DINO"]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def locate(weights: str | None, variant: str | None = None) -> None:
    """MetricUnavailable, without loading anything, where no weights are to be had."""
    if weights is not None:
        if not Path(weights).expanduser().is_file():
            raise MetricUnavailable(f"weights file {weights} not found")
        return
    require_hub_cache(
        "timm/" + SPEC.params["model"], ["model.safetensors", "pytorch_model.bin"], SPEC.weights_env
    )


def load_dino(weights: str | None, device: str = "cpu"):
    """timm ViT-S/16 without a head, DINO weights from `weights` or timm's hub cache."""
    locate(weights)
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    if weights is None:
        try:
            model = timm.create_model(SPEC.params["model"], pretrained=True, num_classes=0)
        except Exception as err:
            raise MetricUnavailable(
                f"timm could not load {SPEC.params['model']} weights ({describe(err)}); set "
                "REALFILL_DINO_WEIGHTS to a local ViT-S/16 DINO state dict"
            ) from None
    else:
        model = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0)
        state = checkpoint_filter_fn(load_state_dict(weights), model)
        state = {k: v for k, v in state.items() if not k.startswith("head")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise MetricUnavailable(
                f"{weights} is not a ViT-S/16 state dict (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]})"
            )
    return model.eval().to(device)


def build(args):
    model = load_dino(args.weights, args.device)

    def cls_token(x):
        return model.forward_features(x)[:, 0]

    return EmbeddingScorer.normalised(cls_token, model, IMAGENET_MEAN, IMAGENET_STD, args.device)


if __name__ == "__main__":
    sys.exit(run_metric(SPEC, build, __doc__))
