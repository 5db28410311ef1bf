"""run_realbench.py: two example scenes end to end on the tiny model (the SLURM script's per-scene
command killed mid-scene and resumed by `run`; a scene that fails while the other completes,
then fixed), and fast checks of validation, refused recipe changes and the scene lock."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, make_scene
from PIL import Image

import realfill_utils as ru
import run_realbench as rb
import scene_engine as engine
from benchmark.suite import discover

QUIET_TRAINING = "--report_to none --validation_steps 0 --checkpointing_steps 0 --lr_warmup_steps 0"


def recipe(model: Path) -> list[str]:
    return ["--pretrained_model_name_or_path", str(model), "--resolution", "64",
            "--train_batch_size", "2", "--max_train_steps", "4", "--num_images", "2",
            "--num_inference_steps", "2", "--matcher", "sift", "--metrics", "PSNR", "SSIM",
            "--train_args", QUIET_TRAINING]  # fmt: skip


def state(out: Path, scene: str) -> dict:
    return engine.read_state(out / "runs" / scene / engine.STATE_FILE)


def statuses(out: Path) -> dict[str, dict]:
    return rb.status_table(out, rb.read_config(out))[1]


def runner(out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(rb.SCRIPT), "run", "--output_dir", str(out), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def bench_run(tiny_model, tmp_path_factory):
    """The whole story on one output folder, with what was seen at each step:
    1. `slurm` sets the run up (RealBench-1 and Custom-2, copies of data/Custom/1 and 2);
    2. the script's per-scene command runs task 0 and is killed (process group, SIGKILL)
       while RealBench-1 is in its infer stage;
    3. `run --gpus 0,1` resumes RealBench-1 and fails Custom-2 (its results folder is blocked
       by a file), 4. the file is removed and `run` completes Custom-2."""
    root = tmp_path_factory.mktemp("realbench")
    data, out = root / "data", root / "run"
    shutil.copytree(ROOT / "data" / "Custom" / "1", data / "RealBench" / "1")
    shutil.copytree(ROOT / "data" / "Custom" / "2", data / "Custom" / "2")
    seen: dict = {}
    setup = ["--realbench_dir", str(data), "--custom_dir", str(data), "--output_dir", str(out)]
    assert rb.main(["slurm", *setup, *recipe(tiny_model), "--partition", "gpu"]) == 0
    script = out / "slurm" / "realbench.sbatch"
    blocker = out / "results" / "Custom-2-results"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where infer.py wants its folder")

    with open(root / "task0.log", "w") as log:
        task = subprocess.Popen(
            ["bash", str(script)],
            env=dict(os.environ, SLURM_ARRAY_TASK_ID="0"),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the kill takes every stage too
        )
        deadline = time.monotonic() + 600  # a safety net; a busy machine is slow
        while state(out, "RealBench-1").get("running", {}).get("stage") != "infer":
            assert task.poll() is None and time.monotonic() < deadline, "never reached infer"
            time.sleep(0.2)
        seen["while_running"] = statuses(out)
        time.sleep(1.0)  # infer.py is under way
        os.killpg(task.pid, signal.SIGKILL)
        task.wait()
    lock = out / "runs" / "RealBench-1" / engine.LOCK_FILE
    deadline = time.monotonic() + 60
    while engine.SceneLock.held(lock):  # until the killed infer.py, which shares it, is gone
        assert time.monotonic() < deadline
        time.sleep(0.1)
    seen["task0_log"] = (root / "task0.log").read_text()
    seen["after_kill"] = statuses(out)
    seen["state_after_kill"] = state(out, "RealBench-1")
    lora = out / "models" / "RealBench-1-model" / ru.LORA_FILE
    seen["lora_mtime_after_kill"] = lora.stat().st_mtime_ns

    seen["run1"] = runner(out, "--gpus", "0,1")
    seen["after_run1"] = statuses(out)
    seen["report1"] = (out / "report" / "realbench_report.md").read_text()
    seen["lora_mtime_after_run1"] = lora.stat().st_mtime_ns
    seen["custom_train_after_run1"] = state(out, "Custom-2")["stages"]["train"]

    blocker.unlink()
    seen["run2"] = runner(out)
    seen["after_run2"] = statuses(out)
    return out, data, script, seen


def test_slurm_script_runs_one_scene_per_array_task(bench_run):
    out, _, script, seen = bench_run
    text = script.read_text()
    assert "#SBATCH --array=0-1\n" in text  # one task per scene
    assert "#SBATCH --gres=gpu:1" in text and "#SBATCH --partition=gpu" in text
    assert f"#SBATCH --output={out}/slurm/logs/%A_%a.out" in text
    assert (out / "slurm" / "logs").is_dir()  # sbatch does not create it
    command = f'run_realbench.py scene --output_dir {out} --index "$SLURM_ARRAY_TASK_ID"'
    assert f"exec {sys.executable} {rb.SCRIPT.parent}/{command}" in text
    assert f"run_realbench.py report --output_dir {out}" in text  # the gather command
    assert "#   0: RealBench-1\n#   1: Custom-2" in text
    # Run locally with SLURM_ARRAY_TASK_ID=0, that command did scene 0's training.
    assert "[RealBench-1] 1/4 train: done in" in seen["task0_log"]
    assert "Custom-2" not in seen["task0_log"]


def test_killed_scene_resumes_without_redoing_finished_stages(bench_run):
    out, _, _, seen = bench_run
    assert seen["while_running"]["RealBench-1"]["status"] == "running"
    assert seen["while_running"]["RealBench-1"]["stage"] == "infer"
    assert seen["after_kill"]["RealBench-1"] | {"hours": 0} == {
        "status": "stopped",
        "stage": "infer",
        "done": 1,
        "hours": 0,
        "detail": "killed or interrupted; run again",
    }
    before = seen["state_after_kill"]["stages"]
    assert list(before) == ["train"]
    after = state(out, "RealBench-1")["stages"]
    assert after["train"] == before["train"]  # the record of the finished stage is untouched
    assert seen["lora_mtime_after_run1"] == seen["lora_mtime_after_kill"]  # and not retrained
    assert "[RealBench-1] 1/4 train: done earlier, skipped" in seen["run1"].stdout
    assert after["infer"]["started"] >= seen["state_after_kill"]["running"]["started"]
    assert sorted(after) == ["benchmarks", "infer", "rank", "train"]


def test_a_failing_scene_is_reported_and_the_others_complete(bench_run):
    out, _, _, seen = bench_run
    run1 = seen["run1"]
    assert run1.returncode == 1, run1.stdout + run1.stderr
    assert seen["after_run1"]["RealBench-1"]["status"] == "done"
    failed = seen["after_run1"]["Custom-2"]
    assert failed["status"] == "failed" and failed["stage"] == "infer"
    assert "Custom-2-results" in failed["detail"]  # the reason, from infer.py's own message
    assert "FAILED at infer" in run1.stderr
    table = rb.status_table(out, rb.read_config(out))[0]
    assert "RealBench-1  done" in table
    # The report covers the finished scene only.
    assert "RealFill, all completions" in seen["report1"]
    assert "Custom scenes" not in seen["report1"]

    # Fixed and run again: Custom-2 continues at infer; its training is not redone.
    run2 = seen["run2"]
    assert run2.returncode == 0, run2.stdout + run2.stderr
    assert "[Custom-2] 1/4 train: done earlier, skipped" in run2.stdout
    assert state(out, "Custom-2")["stages"]["train"] == seen["custom_train_after_run1"]
    assert "[RealBench-1] 4/4 benchmarks: done earlier, skipped" in run2.stdout
    assert {r["status"] for r in seen["after_run2"].values()} == {"done"}
    assert "failed" not in state(out, "Custom-2")


def test_outputs_are_what_benchmarks_py_discovers_and_the_report_has_both_tables(bench_run):
    out, data, _, _ = bench_run
    for name in ("RealBench-1", "Custom-2"):
        assert (out / "models" / f"{name}-model" / ru.LORA_FILE).is_file()
        results = out / "results" / f"{name}-results"
        assert {"0.png", "1.png", "completions.json", "loftr_ranking_scores.json"} <= {
            p.name for p in results.iterdir()
        }
    folders, skipped = discover(
        out / "results", {"RealBench": data / "RealBench", "Custom": data / "Custom"}, 2
    )
    assert [f.name for f in folders] == ["Custom-2-results", "RealBench-1-results"]
    assert not skipped

    report = (out / "report" / "realbench_report.md").read_text()
    assert "| RealFill (paper) | paper (quoted) | 33 | 14.78 | 0.424 |" in report
    assert "| RealFill, seed selection drop 75% | paper (quoted) | 33 | 15.10 | 0.427 |" in report
    ours = [line for line in report.splitlines() if "| this run |" in line]
    assert len(ours) == 4  # RealBench and Custom: all completions, and drop 75%
    scores = json.loads((out / "report" / "benchmark_report_scores.json").read_text())
    psnr = [r["PSNR"] for r in scores["scores"] if r["folder"] == "RealBench-1-results"]
    assert f"| RealFill, all completions | this run | 1 | {sum(psnr) / 2:.2f} |" in report
    for name in ("RealBench-1", "Custom-2"):
        means = state(out, name)["stages"]["benchmarks"]["means"]["base"]
        assert set(means) == {"PSNR", "SSIM"} and all(math.isfinite(v) for v in means.values())


def test_a_recipe_change_is_refused_and_a_busy_scene_is_not_run_twice(bench_run, capsys):
    out, _, _, _ = bench_run
    config = (out / rb.CONFIG_FILE).read_text()
    assert rb.main(["run", "--output_dir", str(out), "--max_train_steps", "5"]) == ru.EXIT_INPUT
    err = capsys.readouterr().err
    assert "--max_train_steps: 4 -> 5" in err and "new --output_dir" in err
    assert (out / rb.CONFIG_FILE).read_text() == config

    lock = engine.SceneLock(out / "runs" / "Custom-2" / engine.LOCK_FILE)
    assert lock.acquire()
    try:
        assert statuses(out)["Custom-2"]["status"] == "running"
        assert (
            rb.main(["scene", "--output_dir", str(out), "--scene", "Custom-2"]) == engine.EXIT_BUSY
        )
    finally:
        lock.release()
    assert rb.main(["scene", "--output_dir", str(out), "--index", "1"]) == 0  # all done: skips
    assert capsys.readouterr().out.count("done earlier, skipped") == 4
    assert rb.main(["scene", "--output_dir", str(out), "--index", "2"]) == ru.EXIT_INPUT


# ---------------------------------------------------------------------------------------------
# Fast checks, no model
# ---------------------------------------------------------------------------------------------
def test_every_scene_is_validated_before_anything_starts(tmp_path, capsys, monkeypatch):
    data = tmp_path / "RealBench"
    make_scene(data / "1")
    bad_mask = make_scene(data / "2")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(bad_mask / "target" / "mask.png")
    no_gt = make_scene(data / "10")
    (no_gt / "target" / "gt.png").unlink()
    out = tmp_path / "run"
    argv = ["run", "--realbench_dir", str(tmp_path), "--output_dir", str(out), "--matcher", "sift"]
    assert rb.main(argv) == ru.EXIT_INPUT
    err = capsys.readouterr().err
    assert "2 of 3 scenes cannot be used; nothing was started" in err
    assert "RealBench-2: " in err and "masks must match the target size" in err
    assert "RealBench-10: " in err and "gt.png: missing" in err
    assert "https://realfill.github.io" in err
    assert not out.exists()

    missing = ["run", "--realbench_dir", str(tmp_path / "nowhere"), "--output_dir", str(out)]
    assert rb.main(missing) == ru.EXIT_INPUT
    assert "RealFill project page (https://realfill.github.io)" in capsys.readouterr().err

    (bad_mask / "target" / "mask.png").unlink()  # scene 2 left out; 1 and 10 remain usable
    shutil.rmtree(bad_mask)
    (no_gt / "target" / "gt.png").write_bytes((data / "1" / "target" / "gt.png").read_bytes())
    mine = tmp_path / "mine"
    (mine / "slurm").mkdir(parents=True)
    (mine / "slurm" / "realbench.sbatch").write_text("my own job")
    argv = ["slurm", "--realbench_dir", str(tmp_path), "--output_dir", str(mine)]
    base = ["--pretrained_model_name_or_path", str(ru.TOY_MODEL), "--matcher", "sift",
            "--metrics", "PSNR", "SSIM"]  # fmt: skip
    assert rb.main([*argv, *base]) == ru.EXIT_INPUT
    assert "holds files that no run set up" in capsys.readouterr().err
    assert (mine / "slurm" / "realbench.sbatch").read_text() == "my own job"
    assert sorted(p.name for p in mine.iterdir()) == ["slurm"]

    # fp16 is refused where the stages would run on this machine's (missing) GPU, not where a
    # login node writes the array script for GPU nodes
    import torch

    if not torch.cuda.is_available():
        fp16 = ["--train_args", "--vae_precision fp16"]
        argv = ["run", "--realbench_dir", str(tmp_path), "--output_dir", str(tmp_path / "r")]
        assert rb.main([*argv, *base, *fp16]) == ru.EXIT_INPUT
        assert "fp16 needs a CUDA GPU" in capsys.readouterr().err
        argv = ["slurm", "--realbench_dir", str(tmp_path), "--output_dir", str(tmp_path / "s")]
        assert rb.main([*argv, *base, *fp16]) == ru.EXIT_OK
        assert (tmp_path / "s" / "slurm" / "realbench.sbatch").is_file()

    # a metric whose weights are missing is refused at setup, not after each scene's training
    monkeypatch.setenv("REALFILL_LPIPS_WEIGHTS", str(tmp_path / "alexnet.pth"))
    argv = ["run", "--realbench_dir", str(tmp_path), "--output_dir", str(tmp_path / "m")]
    assert rb.main([*argv, *base, "--metrics", "PSNR", "LPIPS"]) == ru.EXIT_INPUT
    err = capsys.readouterr().err
    assert f"LPIPS: weights file {tmp_path / 'alexnet.pth'} not found" in err
    assert "leave them out: --metrics PSNR" in err and not (tmp_path / "m").exists()
    # a run set up while they were there keeps its metrics: resumed, it says so and goes on
    (tmp_path / "alexnet.pth").write_bytes(b"weights")
    argv = ["slurm", "--realbench_dir", str(tmp_path), "--output_dir", str(tmp_path / "m")]
    assert rb.main([*argv, *base, "--metrics", "PSNR", "LPIPS"]) == ru.EXIT_OK
    (tmp_path / "alexnet.pth").unlink()
    assert rb.main(argv[:1] + argv[3:]) == ru.EXIT_OK  # resumed with its stored recipe
    assert "LPIPS: weights file" in capsys.readouterr().err


def test_sigterm_stops_the_running_scene_and_starts_no_other(tiny_model, tmp_path):
    for number in (1, 2):
        make_scene(tmp_path / "data" / "RealBench" / str(number))
    out = tmp_path / "run"
    command = [sys.executable, str(rb.SCRIPT), "run", "--realbench_dir", str(tmp_path / "data"),
               "--output_dir", str(out), *recipe(tiny_model)]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 600
    while "running" not in state(out, "RealBench-1"):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    proc.terminate()  # SIGTERM to the runner alone, as `kill <pid>` sends it
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output
    assert "run the same command again to resume" in output
    rows = statuses(out)
    assert rows["RealBench-1"]["status"] == "stopped" and rows["RealBench-1"]["stage"] == "train"
    assert rows["RealBench-2"]["status"] == "pending"
    assert "RealBench-2" not in output


def test_a_resumed_run_keeps_its_gpus(tmp_path, capsys):
    config = {"schema_version": rb.SCHEMA_VERSION}
    assert rb.remember_gpus(tmp_path, config, "0,1") == "0,1"
    stored = json.loads((tmp_path / rb.CONFIG_FILE).read_text())
    assert rb.remember_gpus(tmp_path, stored, None) == "0,1"  # `run` again without --gpus
    assert "--gpus 0,1" in capsys.readouterr().out
    assert rb.remember_gpus(tmp_path, stored, "cpu") == "cpu"  # given again: the new one
    assert json.loads((tmp_path / rb.CONFIG_FILE).read_text())["gpus"] == "cpu"


def test_geometry_adds_the_warp_stage_and_guides_every_infer(tiny_model, tmp_path):
    data, out = tmp_path / "data", tmp_path / "run"
    shutil.copytree(ROOT / "data" / "Custom" / "4", data / "Custom" / "4")
    setup = ["--custom_dir", str(data), "--output_dir", str(out), *recipe(tiny_model)]
    assert rb.main(["slurm", *setup, "--geometry", "--refill", "--partition", "gpu"]) == 0
    config = rb.read_config(out)
    assert config["recipe"]["geometry"] is True
    stages = engine.bench_stages(config, config["scenes"][0], out)
    assert [s.name for s in stages][:3] == ["train", "warp", "infer"]
    warp = out / "warp" / "Custom-4-results-warp"
    assert stages[1].command[stages[1].command.index("--output_dir") + 1] == str(warp)
    infers = [s.command for s in stages if s.name in ("infer", "refill_infer")]
    assert len(infers) == 2
    for command in infers:
        assert command[command.index("--prior_image") + 1] == str(warp / "0.png")
        assert command[command.index("--prior_uncertainty") + 1] == str(warp / "uncertainty.png")
    # A run set up without the flag has no warp stage, and the stored choice is kept on resume.
    assert rb.main(["slurm", "--output_dir", str(out), "--no-geometry", "--partition", "gpu"]) == 2
