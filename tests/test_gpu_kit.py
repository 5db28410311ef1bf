"""perf/gpu_kit.py: its CPU smoke mode runs every part's code path and writes every figure."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "perf" / "gpu_kit.py"
sys.path.insert(0, str(ROOT / "perf"))

import gpu_kit  # noqa: E402


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[dict, str]:
    """One smoke run with every CPU-capable variant; (results, Markdown report)."""
    output = tmp_path_factory.mktemp("kit") / "smoke.json"
    cmd = [sys.executable, str(KIT), "--smoke", "--output", str(output)]
    cmd += ["--variants", "sdpa", "xformers", "channels_last"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(output.read_text()), output.with_suffix(".md").read_text()


def positive(value) -> bool:
    return isinstance(value, int | float) and value > 0 and math.isfinite(value)


def test_smoke_records_environment_and_every_part(smoke):
    report, _ = smoke
    assert report["schema_version"] == gpu_kit.SCHEMA_VERSION
    assert report["mode"] == "smoke" and report["device"] == "cpu"
    assert report["environment"]["packages"]["torch"]
    assert report["environment"]["packages"]["diffusers"]
    parts = report["parts"]
    assert set(parts) == {"build", "train_t4", "train_paper", "infer", "loftr", "metrics"}
    assert set(parts["train_paper"]) == {"sdpa", "xformers", "channels_last"}
    # the real SD2 tokenizer, as in the full-size build
    assert parts["build"]["status"] == "ok" and parts["build"]["tokenizer_vocab"] == 49408


@pytest.mark.parametrize("name", ["train_t4", "sdpa", "channels_last"])
def test_training_parts_time_real_steps_of_train_realfill(smoke, name):
    report, _ = smoke
    part = report["parts"].get(name) or report["parts"]["train_paper"][name]
    assert part["status"] == "ok", part
    warmup, timed = report["settings"]["warmup_steps"], report["settings"]["timed_steps"]
    # one more step than timed + warm-up ran: each step is timed to the start of the next
    assert len(part["step_seconds"]) == warmup + timed and part["timed_steps"] == timed
    assert all(positive(s) for s in part["step_seconds"])
    assert part["s_per_step"] == pytest.approx(sum(part["step_seconds"][warmup:]) / timed, abs=1e-3)
    assert part["projected_2000_steps_s"] == pytest.approx(part["s_per_step"] * 2000, rel=1e-3)
    assert part["losses_finite"] and part["lora_written"]  # train_realfill.train ran to the end
    assert part["attention_processors"] == ["AttnProcessor2_0"]  # PyTorch SDPA
    assert positive(part["peak_rss_gib"])
    assert part["peak_allocated_gib"] is None  # no GPU: no GPU figure is invented
    recipe = part["recipe"]
    if name == "train_t4":
        assert recipe["use_8bit_adam"] and recipe["gradient_checkpointing"]
        assert recipe["effective_batch"] == recipe["batch"] * recipe["gradient_accumulation_steps"]
        assert recipe["gradient_accumulation_steps"] > 1
    else:
        assert recipe["mixed_precision"] == "bf16" and not recipe["gradient_checkpointing"]
        assert recipe["variant"] == name


def test_xformers_is_skipped_with_the_reason_on_a_cpu(smoke):
    report, _ = smoke
    part = report["parts"]["train_paper"]["xformers"]
    assert part["status"] == "skipped" and "CUDA" in part["error"]


def test_infer_part_writes_every_completion_and_times_it(smoke):
    report, _ = smoke
    part = report["parts"]["infer"]
    assert part["status"] == "ok", part
    settings = report["settings"]
    assert [[r["scheduler"], r["steps"], r["batch_size"]] for r in part["runs"]] == settings[
        "infer_runs"
    ]
    for run in part["runs"]:
        assert run["num_images"] == run["files_written"] == settings["num_images"]
        assert positive(run["generate_s"]) and positive(run["per_image_s"])
        assert run["model_size"] == [settings["resolution"]] * 2


def test_loftr_and_metric_parts_score_every_pair(smoke):
    report, _ = smoke
    loftr, config = report["parts"]["loftr"], report["settings"]["loftr"]
    assert loftr["status"] == "ok", loftr
    assert [[r["max_side"], r["coarse_threshold"] == 0.0] for r in loftr["rows"]] == config["rows"]
    for row in loftr["rows"]:
        assert row["pairs"] == config["candidates"] * config["references"]
        assert row["errors"] == 0 and positive(row["s_per_pair"]) and positive(row["pairs_per_s"])
        assert positive(row["completions_per_s"])
    metrics = report["parts"]["metrics"]
    for name in ("LPIPS", "DINO", "CLIP"):
        m = metrics[name]
        assert m["status"] == "ok", m
        assert m["items"] == report["settings"]["metric_items"] and m["values_finite"]
        assert positive(m["s_per_pair"]) and positive(m["images_per_s"])
    assert metrics["LPIPS"]["mean_value"] >= 0  # a distance
    assert -1 <= metrics["DINO"]["mean_value"] <= 1 and -1 <= metrics["CLIP"]["mean_value"] <= 1


def test_smoke_never_claims_a_goal(smoke):
    report, markdown = smoke
    assert len(report["goals"]) == 3
    assert all(g["met"] is None for g in report["goals"])
    assert "not GPU figures" in markdown
    for heading in ("Training", "Inference", "LoFTR", "Learned metrics", "Goals"):
        assert heading in markdown


def test_step_seconds_groups_micro_batches_into_optimizer_steps():
    marks = [
        0.0,
        0.1,
        0.2,
        0.3,
        1.0,
        1.1,
        1.2,
        1.3,
        2.5,
    ]  # accumulation 4: steps start at 0, 1, 2.5
    assert gpu_kit.step_seconds(marks, 4) == pytest.approx([1.0, 1.5])
    assert gpu_kit.step_seconds([0.0, 2.0, 5.0], 1) == pytest.approx([2.0, 3.0])


def test_results_file_is_named_after_the_gpu():
    assert gpu_kit.slug("NVIDIA H200 NVL") == "nvidia-h200-nvl"
    assert gpu_kit.slug("Tesla T4") == "tesla-t4"


def test_a_failing_part_is_recorded_and_the_run_goes_on(tmp_path):
    spec = gpu_kit.settings(smoke=True) | {"work": str(tmp_path), "model": str(tmp_path / "none")}
    spec["scene"] = str(gpu_kit.write_scene(tmp_path / "scene", 64))
    result = gpu_kit.run_job("infer", spec, timeout=600)
    assert result["status"] == "error"
    assert "model folder not found" in result["error"]  # infer.py's own message, not a trace
    assert "log_tail" in result
    unknown = gpu_kit.run_job("no_such_part", spec, timeout=600)
    assert unknown["status"] == "error" and "unknown part" in unknown["error"]


def test_refuses_smoke_without_output_and_gpu_mode_without_a_gpu(tmp_path):
    proc = subprocess.run([sys.executable, str(KIT), "--smoke"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--output" in proc.stderr
    import torch

    if not torch.cuda.is_available():
        proc = subprocess.run([sys.executable, str(KIT)], capture_output=True, text=True)
        assert proc.returncode == 2 and "--smoke" in proc.stderr
