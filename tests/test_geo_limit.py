"""perf/bench_geo_limit.py's analysis, on a scene whose warp fill is wrong on a known patch."""

from __future__ import annotations

import sys

import numpy as np
from conftest import ROOT, make_scene
from PIL import Image

import geometry
from benchmark.psnr import masked_psnr

sys.path.insert(0, str(ROOT / "perf"))
import bench_geo_limit  # noqa: E402


def test_the_analysis_finds_where_the_warp_is_wrong_and_what_knowing_it_would_give(tmp_path):
    scene = make_scene(tmp_path / "scene", size=(48, 40), hole=(12, 10, 36, 30))
    gt = np.asarray(Image.open(scene / "target" / "gt.png").convert("RGB")).astype(int)
    hole = np.asarray(Image.open(scene / "target" / "mask.png")) > 0
    warp, results = tmp_path / "warp", tmp_path / "results"
    warp.mkdir()
    results.mkdir()
    prior = gt.copy()
    prior[12:18, 14:20] = 255 - prior[12:18, 14:20]  # wrong on one patch of the hole only
    Image.fromarray(prior.astype(np.uint8)).save(warp / "0.png")
    geometry.uncertainty_image(np.full(hole.shape, 4.0)).save(warp / "uncertainty.png")
    rng = np.random.default_rng(0)
    for i in range(4):  # right on average everywhere, noisy
        noisy = np.clip(gt + rng.normal(0, 12, gt.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(results / f"{i}.png")
    found = bench_geo_limit.analyse(scene, warp, results, 4)
    psnr = found["psnr"]
    assert psnr["warp fill"] == masked_psnr(gt.astype(np.uint8), prior.astype(np.uint8), hole)
    assert found["worst_share_of_warp_error"] > 0.99  # the patch carries the warp's error
    assert found["worst_pixels"] == round(0.2 * found["hole_pixels"])  # even with ties at 0
    oracle = "oracle: warp fill, the completions' mean on its worst 20%"
    assert psnr[oracle] > psnr["warp fill"] + 10
    warp_rms, completion_rms = found["rms_error"]["warp fill"], found["rms_error"]["completions"]
    assert warp_rms[0] > completion_rms[0] and warp_rms[1] < completion_rms[1]
    lines = bench_geo_limit.report("Custom-9", "cmd", found, 0.4)
    assert any(line.startswith(f"| {oracle} | ") for line in lines)
