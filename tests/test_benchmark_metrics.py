"""The metric definitions: PSNR/SSIM against independent computations, invariance to pixels
outside the fill mask, ideal values for identical images, learned metrics loaded from local
random-weight files, and "unavailable" (fast, no crash) without weights offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from benchmark.common import Item
from benchmark.psnr import masked_psnr
from benchmark.ssim import masked_ssim

ROOT = Path(__file__).resolve().parents[1]


def random_pair(seed: int, size=(40, 48)):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    result = np.clip(gt.astype(int) + rng.integers(-40, 41, gt.shape), 0, 255).astype(np.uint8)
    return gt, result


def hole_mask(size=(40, 48), box=(8, 10, 30, 40)) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    y0, x0, y1, x1 = box
    mask[y0:y1, x0:x1] = True
    return mask


MASKS = {
    "inpainting": hole_mask(),
    "outpainting": ~hole_mask(box=(6, 6, 34, 42)),  # fill touches every image border
    "corner": hole_mask(box=(0, 0, 12, 15)),
}


@pytest.mark.parametrize("kind", list(MASKS))
def test_psnr_matches_numpy_by_hand(kind):
    gt, result = random_pair(1)
    mask = MASKS[kind]
    diff = (gt.astype(np.float64) - result)[mask]
    expected = 10 * np.log10(255.0**2 / np.mean(diff**2))
    assert masked_psnr(gt, result, mask) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kind", list(MASKS))
def test_ssim_matches_scikit_image_map(kind):
    gt, result = random_pair(2)
    mask = MASKS[kind]
    _, full = structural_similarity(gt, result, channel_axis=2, data_range=255, full=True)
    expected = full[mask].mean()
    assert masked_ssim(gt, result, mask) == pytest.approx(expected, abs=1e-5)


def item(gt, result, mask) -> Item:
    return Item("x", Path("gt.png"), gt, mask, result, False)


@pytest.fixture(scope="module")
def lpips_weights(tmp_path_factory) -> Path:
    """A whole lpips.LPIPS state dict with a random AlexNet backbone and the shipped heads."""
    import warnings

    import lpips
    import torch

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's "pretrained is deprecated"
        model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    path = tmp_path_factory.mktemp("lpips") / "lpips_random.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def lpips_scorer(lpips_weights):
    from argparse import Namespace

    from benchmark import lpips_metric

    return lpips_metric.build(Namespace(weights=str(lpips_weights), device="cpu"))


def scorers(lpips_scorer):
    from argparse import Namespace

    from benchmark import psnr, ssim

    args = Namespace(weights=None, device="cpu")
    return {"PSNR": psnr.build(args), "SSIM": ssim.build(args), "LPIPS": lpips_scorer}


def test_pixels_outside_the_fill_mask_change_no_masked_metric(lpips_scorer):
    gt, result = random_pair(3, size=(64, 64))
    mask = hole_mask((64, 64), (20, 20, 44, 44))
    changed = result.copy()
    rng = np.random.default_rng(4)
    changed[~mask] = rng.integers(0, 256, (int((~mask).sum()), 3), dtype=np.uint8)
    for name, score in scorers(lpips_scorer).items():
        assert score(item(gt, result, mask)) == score(item(gt, changed, mask)), name
    # ...while a change inside the mask does change them
    inside = result.copy()
    inside[mask] = 255 - inside[mask]
    for name, score in scorers(lpips_scorer).items():
        assert score(item(gt, result, mask)) != score(item(gt, inside, mask)), name


def test_identical_images_give_ideal_masked_values(lpips_scorer):
    gt, _ = random_pair(5, size=(64, 64))
    mask = hole_mask((64, 64), (10, 10, 40, 50))
    values = {n: s(item(gt, gt.copy(), mask)) for n, s in scorers(lpips_scorer).items()}
    assert values["PSNR"] == float("inf")
    assert values["SSIM"] == pytest.approx(1.0, abs=1e-6)
    assert values["LPIPS"] == pytest.approx(0.0, abs=1e-7)


def test_lpips_loads_a_torchvision_alexnet_state_dict(tmp_path, lpips_weights):
    import torch
    from torchvision.models import alexnet

    from benchmark.lpips_metric import load_lpips

    torch.manual_seed(1)
    backbone = alexnet(weights=None)
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(backbone.state_dict(), path)
    model = load_lpips(str(path))
    assert torch.equal(model.net.slice1[0].weight, backbone.features[0].weight)
    assert torch.equal(getattr(model.net.slice5, "10").weight, backbone.features[10].weight)
    whole = load_lpips(str(lpips_weights))
    assert not torch.equal(whole.net.slice1[0].weight, backbone.features[0].weight)


def embedding_values(score, gt, other):
    return score(item(gt, gt.copy(), None)), score(item(gt, other, None))


def test_dino_from_a_local_random_state_dict(tmp_path):
    from argparse import Namespace

    import timm
    import torch

    from benchmark import dino

    torch.manual_seed(0)
    reference = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "dino_vits16.pth"
    torch.save(reference.state_dict(), path)
    score = dino.build(Namespace(weights=str(path), device="cpu"))
    gt, other = random_pair(6, size=(48, 64))
    same, different = embedding_values(score, gt, other)
    assert same == pytest.approx(1.0, abs=1e-5)
    assert different < same
    assert torch.equal(score.model.blocks[3].attn.qkv.weight, reference.blocks[3].attn.qkv.weight)


def test_clip_from_a_local_random_checkpoint(tmp_path):
    from argparse import Namespace

    import open_clip
    import torch

    from benchmark import clip_metric

    torch.manual_seed(0)
    reference = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
    path = tmp_path / "clip_vit_b_32.pt"
    torch.save({k: v.half() for k, v in reference.state_dict().items()}, path)
    score = clip_metric.build(Namespace(weights=str(path), device="cpu"))
    gt, other = random_pair(7, size=(48, 64))
    same, different = embedding_values(score, gt, other)
    assert same == pytest.approx(1.0, abs=1e-5)
    assert different < same


def test_dreamsim_from_a_local_random_cache_folder(tmp_path):
    """A dreamsim cache folder for the open_clip_vitb32 variant, built from random weights."""
    import contextlib
    from argparse import Namespace

    import torch
    from dreamsim.config import dreamsim_args
    from dreamsim.feature_extraction.vision_transformer import vit_base
    from dreamsim.model import PerceptualModel
    from peft import LoraConfig, get_peft_model

    from benchmark import dreamsim_metric

    torch.manual_seed(0)
    vit = vit_base(patch_size=32)
    vit.pos_drop = torch.nn.LayerNorm(vit.embed_dim)
    state = vit.state_dict() | {"proj": torch.randn(768, 512) * 0.02}
    torch.save({"state_dict": state}, tmp_path / "open_clip_vitb32_pretrain.pth.tar")
    with contextlib.redirect_stdout(sys.stderr):
        base = PerceptualModel(
            **dreamsim_args["model_config"]["open_clip_vitb32"],
            device="cpu",
            load_dir=str(tmp_path),
            normalize_embeds=True,
        )
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, bias="none", target_modules=["qkv"])
    get_peft_model(base, lora).save_pretrained(tmp_path / "open_clip_vitb32_single_lora")
    # dreamsim reads adapter_config.json from <tag>lora/, the folder save_pretrained wrote
    score = dreamsim_metric.build(
        Namespace(weights=str(tmp_path), variant="open_clip_vitb32", device="cpu")
    )
    gt, other = random_pair(8, size=(48, 64))
    same, different = embedding_values(score, gt, other)
    assert same == pytest.approx(0.0, abs=1e-5)
    assert different > same


def run_offline(module: str, tmp_path: Path) -> subprocess.Popen:
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TORCH_HOME=str(tmp_path / "torch"),  # an empty cache: nothing can be found there
        HF_HOME=str(tmp_path / "hf"),
        PYTHONPATH=str(ROOT),
    )
    for var in ("LPIPS", "DREAMSIM", "DINO", "CLIP"):
        env.pop(f"REALFILL_{var}_WEIGHTS", None)
    return subprocess.Popen(
        [sys.executable, "-m", f"benchmark.{module}", "--jobs_file", os.devnull],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_learned_metrics_without_weights_are_unavailable_fast(tmp_path):
    start = time.perf_counter()
    modules = ["lpips_metric", "dreamsim_metric", "dino", "clip_metric"]
    procs = {m: run_offline(m, tmp_path) for m in modules}
    for module, proc in procs.items():
        out, _ = proc.communicate(timeout=120)
        lines = [json.loads(line) for line in out.splitlines()]
        assert proc.returncode == 3, (module, out)
        assert len(lines) == 1 and lines[0]["event"] == "unavailable", (module, out)
        assert "REALFILL_" in lines[0]["reason"]  # the reason names the fix
    # checked before any model library is imported: no download attempt, no retry loop
    assert time.perf_counter() - start < 15


def test_bad_jobs_input_exits_2_with_one_line(tmp_path):
    not_json = tmp_path / "jobs.jsonl"
    not_json.write_text("not json\n")
    for jobs_file in (tmp_path / "missing.jsonl", not_json):
        command = [sys.executable, "-m", "benchmark.psnr", "--jobs_file", str(jobs_file)]
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert "--jobs_file" in proc.stderr and "Traceback" not in proc.stderr
