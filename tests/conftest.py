"""Shared fixtures: a tiny SD2-inpainting-shaped model built from configs, and small scenes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Folder of a tiny random SD2-inpainting pipeline, written with save_pretrained."""
    from make_tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd2-inpainting")


def texture(width: int, height: int, seed: int) -> Image.Image:
    """A smooth random colour texture, so crops and warps of it differ visibly."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


def make_scene(
    scene_dir: Path, size=(48, 40), hole=(12, 10, 36, 30), n_refs: int = 3, seed: int = 0
) -> Path:
    """Write a RealBench-layout scene: references of other sizes (png and jpg), a target whose
    hole (x0, y0, x1, y1) is white, its mask, and the ground truth."""
    width, height = size
    world = texture(width * 2, height * 2, seed)
    (scene_dir / "ref").mkdir(parents=True)
    (scene_dir / "target").mkdir(parents=True)
    for i in range(n_refs):
        ref = world.crop((i * 4, i * 3, i * 4 + width + 8, i * 3 + height + 4))
        ref.save(scene_dir / "ref" / (f"{i}.jpg" if i % 2 else f"{i}.png"))
    gt = world.crop((width // 2, height // 2, width // 2 + width, height // 2 + height))
    gt.save(scene_dir / "target" / "gt.png")
    mask = np.zeros((height, width), dtype=np.uint8)
    x0, y0, x1, y1 = hole
    mask[y0:y1, x0:x1] = 255
    Image.fromarray(mask).save(scene_dir / "target" / "mask.png")
    target = np.asarray(gt).copy()
    target[mask > 0] = 255
    Image.fromarray(target).save(scene_dir / "target" / "target.png")
    return scene_dir


@pytest.fixture
def scene_dir(tmp_path) -> Path:
    return make_scene(tmp_path / "scene")
