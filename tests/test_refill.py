"""refill.py: the two rounds end to end on the tiny model (dataset untouched, augmented scene,
rerun skips), and, with stand-in scripts, resume after a failed stage and refused reruns."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import make_scene, scripts_in_process, tree_digest
from PIL import Image

import loftr_ranking as lr
import realfill_utils as ru
import refill
import scene_engine as engine

QUIET_TRAINING = "--report_to none --checkpointing_steps 0 --validation_steps 0"
FAST = ["--resolution", "32", "--max_train_steps", "1", "--train_batch_size", "1",
        "--num_images", "2", "--num_inference_steps", "2", "--matcher", "sift",
        "--train_args", QUIET_TRAINING]  # fmt: skip


def rank_with_stand_in_matches(*args, **kwargs) -> dict:
    """The real ranking, with every count raised to at least 1: completions of a random tiny
    model (or copies of the target, hole and all) match nothing, and ReFill never adds a
    completion without correspondences."""
    ranking = REAL_RANK(*args, **kwargs)
    for candidate in ranking["candidates"]:
        if candidate["error"] is None:
            candidate["score"] = max(candidate["score"], 1)
    return ranking


REAL_RANK = lr.rank_completions


@pytest.fixture(scope="module")
def tiny_run(tiny_model, tmp_path_factory):
    """One real ReFill run on the tiny model, shared by the tests; its trainings and inferences
    run in this process (the demo, the notebook and run_realbench's tests run them as
    subprocesses)."""
    root = tmp_path_factory.mktemp("refill")
    scene = make_scene(root / "data" / "RealBench" / "7")
    before = tree_digest(scene)
    argv = ["--pretrained_model_name_or_path", str(tiny_model), "--train_data_dir", str(scene),
            "--output_dir", str(root / "run"), *FAST]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(refill.lr, "rank_completions", rank_with_stand_in_matches)
        scripts_in_process(patch)
        code = refill.main(argv)
    return code, argv, scene, before, root / "run"


def test_refill_end_to_end_on_the_tiny_model(tiny_run, capsys):
    code, argv, scene, before, out = tiny_run
    assert code == 0
    assert tree_digest(scene) == before  # the dataset folder is byte-identical afterwards

    # Each stage's own folder, named so that benchmarks.py sees two variants of one scene.
    for model in ("RealBench-7-model", "RealBench-7-model-refill"):
        assert (out / "models" / model / ru.LORA_FILE).is_file()
    results = sorted(p.name for p in (out / "results").iterdir())
    assert results == ["RealBench-7-results", "RealBench-7-results-refill"]
    for folder in results:
        assert {"0.png", "1.png"} <= {p.name for p in (out / "results" / folder).iterdir()}

    # The augmented scene: the original references, byte for byte, plus the chosen completions
    # (5 references wanted, 3 there, 2 completions to choose from), and the same target.
    augmented = out / "scenes" / "RealBench-7-refill"
    summary = json.loads((out / refill.SUMMARY_FILE).read_text())
    chosen = [c["image"] for c in summary["chosen"]]
    assert sorted(chosen) == ["0.png", "1.png"]
    refs = sorted(p.name for p in (augmented / "ref").iterdir())
    assert refs == ["0.png", "1.jpg", "2.png", "refill-0.png", "refill-1.png"]
    for name in ("0.png", "1.jpg", "2.png"):
        assert (augmented / "ref" / name).read_bytes() == (scene / "ref" / name).read_bytes()
    first_round = out / "results" / "RealBench-7-results"
    for name in chosen:
        copied = (augmented / "ref" / f"refill-{name}").read_bytes()
        assert copied == (first_round / name).read_bytes()
    assert tree_digest(augmented / "target") == tree_digest(scene / "target")
    assert [s["status"] for s in summary["stages"]] == ["ran"] * 5

    # Stage 2 trained on the augmented scene, not on the dataset.
    settings = json.loads(
        (out / "models" / "RealBench-7-model-refill" / ru.SETTINGS_FILE).read_text()
    )
    assert Path(settings["args"]["train_data_dir"]) == augmented


def test_rerun_skips_finished_stages(tiny_run, monkeypatch, capsys):
    code, argv, scene, before, out = tiny_run
    assert code == 0
    digest = tree_digest(out / "models")

    def no_subprocess(*args, **kwargs):
        raise AssertionError("a finished stage was run again")

    monkeypatch.setattr(engine.subprocess, "run", no_subprocess)
    monkeypatch.setattr(engine, "run_script", no_subprocess)
    assert refill.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("done earlier, skipped") == 5
    summary = json.loads((out / refill.SUMMARY_FILE).read_text())
    assert [s["status"] for s in summary["stages"]] == ["skipped"] * 5
    assert tree_digest(out / "models") == digest
    assert tree_digest(scene) == before


# ---------------------------------------------------------------------------------------------
# Stand-in scripts: fast, and they can be told to fail
# ---------------------------------------------------------------------------------------------
FAKE_TRAIN = """
import json, os, sys
from pathlib import Path
argv = sys.argv[1:]
arg = lambda name: argv[argv.index(name) + 1]
out = Path(arg("--output_dir"))
with open(os.environ["REFILL_TEST_CALLS"], "a") as log:
    log.write(f"train {out.name} {arg('--train_data_dir')}\\n")
if Path(os.environ["REFILL_TEST_CALLS"] + ".fail").read_text().strip() == out.name:
    sys.exit("stand-in training failed on purpose")
out.mkdir(parents=True, exist_ok=True)
(out / "pytorch_lora_weights.safetensors").write_bytes(b"lora")
(out / "realfill_settings.json").write_text(json.dumps({"args": argv}))
"""

FAKE_INFER = """
import os, sys, shutil
from pathlib import Path
argv = sys.argv[1:]
arg = lambda name: argv[argv.index(name) + 1]
out = Path(arg("--output_dir"))
prior = f" prior {arg('--prior_image')}" if "--prior_image" in argv else ""
with open(os.environ["REFILL_TEST_CALLS"], "a") as log:
    log.write(f"infer {out.name}{prior}\\n")
out.mkdir(parents=True, exist_ok=True)
for i in range(int(arg("--num_images"))):
    shutil.copyfile(arg("--validation_image"), out / f"{i}.png")
"""


@pytest.fixture
def fake_scripts(tmp_path, monkeypatch):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "train.py").write_text(textwrap.dedent(FAKE_TRAIN))
    (scripts / "infer.py").write_text(textwrap.dedent(FAKE_INFER))
    monkeypatch.setattr(engine, "TRAIN_SCRIPT", scripts / "train.py")
    monkeypatch.setattr(engine, "INFER_SCRIPT", scripts / "infer.py")
    monkeypatch.setattr(refill.lr, "rank_completions", rank_with_stand_in_matches)
    # stand-in scripts and base model: the real scripts' argument check does not apply
    monkeypatch.setattr(engine, "check_stage_args", lambda *args, **kwargs: None)
    calls = tmp_path / "calls.txt"
    calls.write_text("")
    Path(f"{calls}.fail").write_text("")
    monkeypatch.setenv("REFILL_TEST_CALLS", str(calls))
    return calls


def test_arguments_a_stage_would_refuse_stop_the_run_before_it_starts(tiny_model, tmp_path, capsys):
    scene = make_scene(tmp_path / "data" / "Custom" / "3", n_refs=2)
    base = ["--pretrained_model_name_or_path", str(tiny_model), "--train_data_dir", str(scene),
            "--matcher", "sift"]  # fmt: skip
    cases = [
        (["--infer_args", "--num_imgs 4"], "infer.py would refuse its arguments"),
        (["--train_args", "--bogus 1"], "train_realfill.py would refuse its arguments"),
        (["--resolution", "36"], "is not a multiple of"),
        (["--infer_args", "--strength 1.5"], "must be in (0, 1]"),  # infer's own value checks
        (["--geometry", "--num_images", "1"], "needs --num_images 2 or more"),  # the prior's
        (["--infer_args", "--num_images 2"], "sets --num_images, which the runner sets"),
        (["--train_args", "--output 1"], "sets --output_dir, which the runner sets"),  # abbrev.
    ]
    if not torch.cuda.is_available():
        cases.append((["--train_args", "--vae_precision fp16"], "fp16 needs a CUDA GPU"))
    for extra, expected in cases:
        out = tmp_path / "run"
        assert refill.main([*base, "--output_dir", str(out), *extra]) == ru.EXIT_INPUT
        assert expected in capsys.readouterr().err
        assert not out.exists()  # nothing written, no state left behind
    missing = [*base[2:], "--pretrained_model_name_or_path", str(tmp_path / "nope")]
    assert refill.main([*missing, "--output_dir", str(tmp_path / "run")]) == ru.EXIT_INPUT


def fake_argv(scene: Path, out: Path, *extra: str) -> list[str]:
    return ["--pretrained_model_name_or_path", "unused", "--train_data_dir", str(scene),
            "--output_dir", str(out), "--num_images", "3", "--matcher", "sift", *extra]  # fmt: skip


def test_a_failed_stage_is_resumed_alone(fake_scripts, tmp_path, capsys):
    scene = make_scene(tmp_path / "data" / "Custom" / "3", n_refs=2)
    before = tree_digest(scene)
    out = tmp_path / "run"
    Path(f"{fake_scripts}.fail").write_text("Custom-3-model-refill")
    assert refill.main(fake_argv(scene, out)) == 1
    err = capsys.readouterr().err
    assert "failed on purpose" in err and "run the same command again" in err
    state = json.loads((out / refill.STATE_FILE).read_text())
    assert sorted(state["stages"]) == ["infer", "select", "train"]

    Path(f"{fake_scripts}.fail").write_text("")
    fake_scripts.write_text("")
    assert refill.main(fake_argv(scene, out)) == 0
    calls = fake_scripts.read_text().split("\n")
    augmented = out / "scenes" / "Custom-3-refill"
    assert calls[:2] == [
        f"train Custom-3-model-refill {augmented}",
        "infer Custom-3-results-refill",
    ]
    assert len(list((augmented / "ref").iterdir())) == 5  # 2 originals + 3 completions
    assert tree_digest(scene) == before


def test_a_scene_with_enough_references_is_not_trained_twice(fake_scripts, tmp_path, capsys):
    """--target_count at most the scene's references: the selection adds nothing, so a second
    training would repeat the first; round 1's completions stand as the round's own."""
    scene = make_scene(tmp_path / "data" / "Custom" / "3", n_refs=2)
    out = tmp_path / "run"
    assert refill.main(fake_argv(scene, out, "--target_count", "2")) == 0
    assert "round 1's completions stand" in capsys.readouterr().out
    calls = fake_scripts.read_text().split()
    assert calls.count("train") == 1 and calls.count("infer") == 1  # one round was run
    first, second = (
        out / "results" / "Custom-3-results",
        out / "results" / "Custom-3-results-refill",
    )
    assert [(second / f"{i}.png").read_bytes() for i in range(3)] == [
        (first / f"{i}.png").read_bytes() for i in range(3)
    ]
    summary = json.loads((out / refill.SUMMARY_FILE).read_text())
    assert [s["stage"] for s in summary["stages"]][-2:] == ["train_refill", "infer_refill"]
    assert refill.main(fake_argv(scene, out, "--target_count", "2")) == 0  # a rerun skips all
    assert fake_scripts.read_text().split().count("train") == 1


def test_a_failed_rerun_leaves_no_summary_of_the_earlier_run(fake_scripts, tmp_path, capsys):
    scene = make_scene(tmp_path / "data" / "Custom" / "3", n_refs=2)
    out = tmp_path / "run"
    assert refill.main(fake_argv(scene, out)) == 0
    summary = out / refill.SUMMARY_FILE
    assert json.loads(summary.read_text())["chosen"]
    # a refused rerun (other settings) runs nothing: the finished run and its summary stay
    assert refill.main(fake_argv(scene, out, "--max_train_steps", "7")) == ru.EXIT_INPUT
    assert summary.is_file()
    # a changed scene is named as such, not as a flag
    reference = sorted((scene / "ref").iterdir())[0]
    image = Image.open(reference).convert("RGB")
    image.putpixel((0, 0), (1, 2, 3))
    image.save(reference)
    assert refill.main(fake_argv(scene, out)) == ru.EXIT_INPUT
    assert "the scene's files changed" in capsys.readouterr().err
    # a stage run again that fails: the earlier run's summary must not describe this one
    state = json.loads((out / refill.STATE_FILE).read_text())
    now = engine.scene_input(scene)
    state["stages"]["train"]["settings"][-1] = now  # as if trained again on the changed scene
    del state["stages"]["train_refill"]
    (out / refill.STATE_FILE).write_text(json.dumps(state))
    Path(f"{fake_scripts}.fail").write_text("Custom-3-model-refill")
    assert refill.main(fake_argv(scene, out)) == 1
    assert "failed on purpose" in capsys.readouterr().err
    assert not summary.exists()


def test_geometry_guides_both_rounds_from_the_warp_fill(fake_scripts, tmp_path, capsys):
    """--geometry: warp_fill.py (the real one) runs first on the ORIGINAL references, and both
    rounds' infer.py get its fill and uncertainty; the scene is only read."""
    scene = make_scene(tmp_path / "data" / "Custom" / "3", n_refs=2)
    before = tree_digest(scene)
    out = tmp_path / "run"
    assert refill.main(fake_argv(scene, out, "--geometry")) == 0
    warp = out / "warp" / "Custom-3-results-warp"
    assert {"0.png", "uncertainty.png", "warp_fill.json"} <= {p.name for p in warp.iterdir()}
    infers = [c for c in fake_scripts.read_text().splitlines() if c.startswith("infer")]
    assert infers == [
        f"infer Custom-3-results prior {warp / '0.png'}",
        f"infer Custom-3-results-refill prior {warp / '0.png'}",
    ]
    state = json.loads((out / refill.STATE_FILE).read_text())
    assert "--prior_uncertainty" in state["stages"]["infer"]["settings"]
    assert state["stages"]["warp"]["hole_covered_by_references"] >= 0
    summary = json.loads((out / refill.SUMMARY_FILE).read_text())
    assert summary["folders"]["warp"] == str(warp)
    assert tree_digest(scene) == before
    # the same run without --geometry is refused, and the message names what was dropped
    assert refill.main(fake_argv(scene, out)) == ru.EXIT_INPUT
    assert "now without --prior_image" in capsys.readouterr().err


def test_other_settings_or_places_are_refused(fake_scripts, tmp_path, capsys):
    scene = make_scene(tmp_path / "data" / "RealBench" / "4")
    out = tmp_path / "run"
    assert refill.main(fake_argv(scene, out)) == 0
    capsys.readouterr()
    # Finished stages made with other settings are not silently mixed with new ones.
    assert refill.main(fake_argv(scene, out, "--max_train_steps", "7")) == 2
    err = capsys.readouterr().err
    assert "stage 'train'" in err and "--max_train_steps: 2000 -> 7" in err  # the flag is named
    assert "failed" in json.loads((out / refill.STATE_FILE).read_text())
    assert refill.main(fake_argv(scene, out)) == 0  # the same command again: nothing is wrong
    assert "failed" not in json.loads((out / refill.STATE_FILE).read_text())
    # The run may not live inside the dataset scene; an unnamed scene path needs --scene_name.
    assert refill.main(fake_argv(scene, scene / "run")) == 2
    assert "overlaps" in capsys.readouterr().err
    odd = make_scene(tmp_path / "data" / "my-scene")
    assert refill.main(fake_argv(odd, tmp_path / "run2")) == 2
    assert "--scene_name" in capsys.readouterr().err
    assert refill.main(fake_argv(odd, tmp_path / "run2", "--scene_name", "Custom-9")) == 0


def test_loftr_without_weights_fails_before_any_training(
    fake_scripts, tmp_path, monkeypatch, capsys
):
    scene = make_scene(tmp_path / "data" / "RealBench" / "5")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.delenv(lr.WEIGHTS_ENV, raising=False)
    argv = fake_argv(scene, tmp_path / "run")
    argv[argv.index("sift")] = "loftr"
    assert refill.main(argv) == 2
    assert "--matcher sift" in capsys.readouterr().err
    assert fake_scripts.read_text() == ""  # nothing was trained
    empty = tmp_path / "loftr_outdoor.ckpt"
    empty.write_bytes(b"")  # found, but no checkpoint: refused now, not at the select stage
    assert refill.main([*argv, "--loftr_weights", str(empty)]) == 2
    assert "not a LoFTR checkpoint kornia can load" in capsys.readouterr().err
    assert fake_scripts.read_text() == "" and not (tmp_path / "run").exists()


def _ranking(scores: dict[str, int]) -> dict:
    candidates = [{"image": name, "score": score, "per_reference": {}, "error": None}
                  for name, score in sorted(scores.items(), key=lambda kv: -kv[1])]  # fmt: skip
    return {"schema_version": 1, "settings": {}, "references": [], "candidates": candidates}


def test_completions_without_correspondences_are_never_chosen(tmp_path, capsys):
    scene = make_scene(tmp_path / "data" / "RealBench" / "8", n_refs=2)
    results = tmp_path / "results"
    results.mkdir()
    for i in range(3):
        (results / f"{i}.png").write_bytes((scene / "target" / "target.png").read_bytes())
    ranking = _ranking({"0.png": 0, "1.png": 0, "2.png": 5})
    record = engine.build_refill_scene(
        scene / "ref", scene / "target", results, ranking, 5, tmp_path / "augmented"
    )
    assert [c["image"] for c in record["chosen"]] == ["2.png"]  # 3 asked for, 1 qualifies
    assert "only 1 of the 3 completions asked for" in capsys.readouterr().err
    with pytest.raises(engine.NothingToAdd, match="nothing new"):
        engine.build_refill_scene(
            scene / "ref", scene / "target", results, _ranking({"0.png": 0, "1.png": 0}), 5,
            tmp_path / "none",
        )  # fmt: skip
    assert not (tmp_path / "none").exists()


def test_refill_stops_when_no_completion_matches_the_scene(
    fake_scripts, tmp_path, monkeypatch, capsys
):
    scene = make_scene(tmp_path / "data" / "Custom" / "6", n_refs=2)
    monkeypatch.setattr(
        refill.lr, "rank_completions", lambda *a, **k: _ranking({"0.png": 0, "1.png": 0})
    )
    assert refill.main(fake_argv(scene, tmp_path / "run")) == ru.EXIT_FAILED
    assert "nothing new" in capsys.readouterr().err
    assert "model-refill" not in fake_scripts.read_text()  # no second round was trained


# ---------------------------------------------------------------------------------------------
# The scene engine's stage loop, with Python stages
# ---------------------------------------------------------------------------------------------
def test_engine_resumes_a_finished_stage_without_rerunning_it(tmp_path):
    calls: list[str] = []

    def stage(name: str, setting: int, fail: bool = False) -> engine.Stage:
        def call() -> dict:
            calls.append(name)
            if fail:
                raise engine.StageFailed(f"{name} failed on purpose")
            return {"value": setting}

        return engine.Stage(name, call=call, inputs=[setting], labels=["--setting"])

    def state() -> engine.State:
        return engine.State(tmp_path / "state.json", tmp_path / "scene")

    with pytest.raises(engine.StageFailed):
        engine.run_stages([stage("a", 1), stage("b", 2, fail=True)], state(), tmp_path)
    recorded = state().data
    assert list(recorded["stages"]) == ["a"] and recorded["failed"]["stage"] == "b"

    report = engine.run_stages([stage("a", 1), stage("b", 2)], state(), tmp_path)
    assert calls == ["a", "b", "b"]  # the finished stage was not run again
    assert [r["status"] for r in report] == ["skipped", "ran"]
    assert "failed" not in state().data and state().data["stages"]["b"]["value"] == 2

    with pytest.raises(ru.SceneError, match="--setting: 1 -> 5"):
        engine.run_stages([stage("a", 5), stage("b", 2)], state(), tmp_path)
    assert calls == ["a", "b", "b"]


def test_engine_stops_after_a_stage_and_a_redone_stage_makes_later_ones_stale(tmp_path):
    """As the notebook runs them, one cell's stages at a time (`until`)."""
    calls: list[str] = []

    def stage(name: str, setting: int) -> engine.Stage:
        return engine.Stage(name, call=lambda: calls.append(name) or {}, inputs=[setting])

    state = engine.State(tmp_path / "state.json", tmp_path / "scene")
    report = engine.run_stages([stage("a", 1), stage("b", 2)], state, tmp_path, until="a")
    assert [r["stage"] for r in report] == ["a"] and calls == ["a"]
    engine.run_stages([stage("a", 1), stage("b", 2)], state, tmp_path, until="b")
    assert calls == ["a", "b"]
    del state.data["stages"]["a"]  # a redone first stage (FORCE_RETRAIN)...
    engine.run_stages([stage("a", 1), stage("b", 2)], state, tmp_path, until="a")
    assert "b" not in state.data["stages"]  # ...makes the later one stale before it runs
    report = engine.run_stages([stage("a", 1), stage("b", 2)], state, tmp_path, until="b")
    assert [r["status"] for r in report] == ["skipped", "ran"] and calls == ["a", "b", "a", "b"]


def test_changed_sampling_settings_are_redone_and_changed_training_refused(tmp_path):
    """The notebook's rule (redo_changed): a sampling stage whose settings changed runs again,
    and so does everything after it; a changed training is refused, never resumed."""
    calls: list[str] = []

    def stage(name: str, setting: int) -> engine.Stage:
        return engine.Stage(name, call=lambda: calls.append(name) or {}, inputs=[setting])

    state = engine.State(tmp_path / "state.json", tmp_path / "scene")
    engine.run_stages([stage("train", 1), stage("infer", 2), stage("rank", 3)], state, tmp_path)
    new_sampling = [stage("train", 1), stage("infer", 9), stage("rank", 3)]
    report = engine.run_stages(new_sampling, state, tmp_path, redo_changed=("infer", "rank"))
    assert [r["status"] for r in report] == ["skipped", "ran", "ran"]
    assert calls == ["train", "infer", "rank", "infer", "rank"]
    with pytest.raises(ru.SceneError, match="finished earlier with other settings"):
        engine.run_stages(
            [stage("train", 7), stage("infer", 9)], state, tmp_path, redo_changed=("infer",)
        )
    assert calls[-1] == "rank"  # nothing ran


def test_echoed_script_output_reaches_sys_stdout_and_the_log(tmp_path, capsys):
    """A notebook cell shows what sys.stdout gets, not the child's own console output."""
    script = tmp_path / "talk.py"
    script.write_text("import sys\nprint('héllo')\nsys.exit(int(sys.argv[1]))\n")
    engine.run_script([script, "0"], tmp_path / "talk.log", echo=True)
    assert capsys.readouterr().out == "héllo\n"
    assert (tmp_path / "talk.log").read_text() == "héllo\n"
    with pytest.raises(engine.StageFailed, match="talk.py exited with status 3"):
        engine.run_script([script, "3"], tmp_path / "talk.log", echo=True)


def test_recipe_defaults_are_the_papers_and_the_toy_record_overrides_them():
    paper = ru.Recipe()
    assert (paper.max_train_steps, paper.train_batch_size, paper.lora_rank) == (2000, 16, 8)
    toy = ru.Recipe.for_model(ru.TOY_MODEL)
    record = ru.model_recipe(ru.TOY_MODEL)["train"]
    assert all(getattr(toy, k) == v for k, v in record.items())
    assert ru.Recipe.for_model(ru.TOY_MODEL, max_train_steps=3).max_train_steps == 3
    # every script's default comes from it
    args = refill.parse_args(["--train_data_dir", "s", "--output_dir", "o"])
    assert args.max_train_steps is None  # filled from the recipe when the run starts
    import train_realfill as tr

    trained = tr.parse_args(["--train_data_dir", "s", "--output_dir", "o"])
    assert all(getattr(trained, f) == getattr(paper, f) for f in tr.TRAIN_RECIPE)
