"""CLIP similarity: cosine similarity of CLIP ViT-B/32 image embeddings of the full result and
the full ground truth (each resized to 224x224, CLIP normalisation).

Weights: --weights / $REALFILL_CLIP_WEIGHTS (an open_clip ViT-B-32 checkpoint file), else
open_clip's 'openai' weights from the Hugging Face cache (downloaded when online). Example:
    python -m benchmark.clip_metric --weights ~/weights/clip-vit-b-32.bin --jobs_file jobs.jsonl
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
    require_hub_cache,
    run_metric,
)

SPEC = METRICS["CLIP"]
HF_REPO = "timm/vit_base_patch32_clip_224.openai"  # where open_clip 3.3 gets the OpenAI weights


def locate(weights: str | None, variant: str | None = None) -> None:
    """MetricUnavailable, without loading anything, where no weights are to be had."""
    if weights is not None and not Path(weights).expanduser().is_file():
        raise MetricUnavailable(f"CLIP weights file {weights} not found")
    if weights is None:
        require_hub_cache(
            HF_REPO,
            ["open_clip_pytorch_model.bin", "open_clip_model.safetensors"],
            SPEC.weights_env,
        )


def load_clip(weights: str | None, device: str = "cpu"):
    """open_clip ViT-B/32 (QuickGELU, as OpenAI trained it) from `weights` or the hub cache."""
    locate(weights)
    import open_clip

    pretrained = str(Path(weights).expanduser()) if weights else SPEC.params["pretrained"]
    try:
        model = open_clip.create_model(
            SPEC.params["model"], pretrained=pretrained, require_pretrained=True
        )
    except Exception as err:
        raise MetricUnavailable(
            f"open_clip could not load {SPEC.params['model']} '{pretrained}' weights "
            f"({describe(err)[:160]}); set REALFILL_CLIP_WEIGHTS to a local checkpoint file"
        ) from None
    return model.eval().to(device)


def build(args):
    model = load_clip(args.weights, args.device)
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    mean, std = OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    return EmbeddingScorer.normalised(model.encode_image, model, mean, std, args.device)


if __name__ == "__main__":
    sys.exit(run_metric(SPEC, build, __doc__))
