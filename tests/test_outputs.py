"""Every writing script: it never touches files it did not write, refuses an output folder that
overlaps its inputs or holds the user's files, takes turns on one folder, and answers --help
and bad input before importing torch, diffusers or transformers."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import ROOT, make_scene

import infer
import realfill_utils as ru
import train_realfill as tr

HEAVY = ("torch", "diffusers", "transformers")


def heavy_imports(*argv: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run a script under `python -X importtime`; return it and the heavy modules it imported."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    imported = {m.group(1) for m in re.finditer(r"\|\s+([\w.]+)\s*$", proc.stderr, re.M)}
    return proc, sorted(set(HEAVY) & imported)


SCRIPTS = [
    "train_realfill.py",
    "infer.py",
    "refill.py",
    "loftr_ranking.py",
    "benchmarks.py",
    "run_realbench.py",
    "make_example_scenes.py",
    "make_tiny_model.py",
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_imports_no_heavy_module(script):
    proc, heavy = heavy_imports(script, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert heavy == [], f"{script} --help imported {heavy}"
    assert "usage:" in proc.stdout


def bad_input_commands(tmp_path) -> dict[str, list[str]]:
    missing = str(tmp_path / "no-such-scene")
    scene = make_scene(tmp_path / "scene")
    return {
        "train_realfill.py": ["--train_data_dir", missing, "--output_dir", str(tmp_path / "o")],
        "infer.py": ["--model_path", str(tmp_path), "--output_dir", str(tmp_path / "o"),
                     "--validation_image", str(scene / "target" / "target.png"),
                     "--validation_mask", str(tmp_path / "no-mask.png")],
        "refill.py": ["--train_data_dir", missing, "--output_dir", str(tmp_path / "o")],
        "loftr_ranking.py": ["--rank-only", "--source-dir", missing, "--ref-dir", missing],
        "benchmarks.py": ["--results_base_dir", missing],
        "run_realbench.py": ["run", "--output_dir", str(tmp_path / "o"),
                             "--realbench_dir", missing],
    }  # fmt: skip


@pytest.mark.parametrize("script", SCRIPTS[:6])
def test_bad_input_is_answered_before_any_heavy_import(script, tmp_path):
    proc, heavy = heavy_imports(script, *bad_input_commands(tmp_path)[script])
    assert proc.returncode == ru.EXIT_INPUT, proc.stderr[-2000:]
    assert heavy == [], f"{script} imported {heavy} before refusing bad input"
    assert "error: " in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# The output folder
# ---------------------------------------------------------------------------------------------
def infer_argv(model, scene, out) -> list[str]:
    return [
        f"--model_path={model}",
        f"--validation_image={scene / 'target' / 'target.png'}",
        f"--validation_mask={scene / 'target' / 'mask.png'}",
        f"--output_dir={out}",
        "--num_images=2",
    ]


def tree(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_infer_into_the_scene_is_refused_and_the_references_survive(tiny_model, tmp_path, capsys):
    scene = make_scene(tmp_path / "scene")
    (scene / "ref" / "1.png").write_bytes((scene / "ref" / "0.png").read_bytes())
    before = tree(scene)
    assert infer.main(infer_argv(tiny_model, scene, scene / "ref")) == ru.EXIT_INPUT
    assert "overlaps the scene" in capsys.readouterr().err
    assert tree(scene) == before  # nothing deleted, nothing added


def test_infer_into_a_scene_whose_target_is_a_link_is_refused(tiny_model, tmp_path, capsys):
    """A scene whose target/ folder (or target files) link elsewhere is still the scene."""
    shared = make_scene(tmp_path / "shared")
    for kind in ("folder", "files"):
        scene = tmp_path / f"linked-{kind}"
        (scene / "ref").mkdir(parents=True)
        (scene / "ref" / "0.png").write_bytes((shared / "ref" / "0.png").read_bytes())
        if kind == "folder":
            (scene / "target").symlink_to(shared / "target", target_is_directory=True)
        else:
            (scene / "target").mkdir()
            for name in ("target.png", "mask.png"):
                (scene / "target" / name).symlink_to(shared / "target" / name)
        before = tree(scene)
        assert infer.main(infer_argv(tiny_model, scene, scene / "results")) == ru.EXIT_INPUT
        assert "overlaps the scene" in capsys.readouterr().err
        assert tree(scene) == before and not (scene / "results").exists()


def test_infer_refuses_a_folder_holding_user_files_and_keeps_them(tiny_model, tmp_path, capsys):
    scene = make_scene(tmp_path / "scene")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "1.png").write_bytes(b"a photo of my own")
    assert infer.main(infer_argv(tiny_model, scene, out)) == ru.EXIT_INPUT
    err = capsys.readouterr().err
    assert "did not write (1.png)" in err and "--output_dir" in err
    assert tree(out) == {"1.png": b"a photo of my own"}


def test_train_into_the_scene_is_refused(tiny_model, tmp_path, capsys):
    scene = make_scene(tmp_path / "scene")
    before = tree(scene)
    for out in (scene / "ref", scene / "models"):
        argv = ["--pretrained_model_name_or_path", str(tiny_model), "--train_data_dir",
                str(scene), "--output_dir", str(out)]  # fmt: skip
        assert tr.main(argv) == ru.EXIT_INPUT
        assert "overlaps the scene" in capsys.readouterr().err
    assert tree(scene) == before


def test_two_infer_runs_into_one_folder_cannot_interleave(tiny_model, tmp_path, capsys):
    """While a run holds the folder (its lock), a second one is refused before it loads a model
    or deletes anything."""
    scene = make_scene(tmp_path / "scene")
    out = tmp_path / "results"
    ru.claim_output_dir(out, "infer.py", infer.output_entries(2, False))
    (out / "0.png").write_bytes(b"the first run's image")
    with ru.output_lock(out, "infer.py"):  # the first run, still writing
        assert infer.main(infer_argv(tiny_model, scene, out)) == ru.EXIT_INPUT
    assert "another infer.py run is writing" in capsys.readouterr().err
    assert (out / "0.png").read_bytes() == b"the first run's image"


def test_a_view_folder_is_rebuilt_but_a_users_file_in_it_is_kept(tmp_path):
    """run_realbench's report/results and a scene's bench/results are folders of links made
    again on every run: a file the user put there is refused, not deleted."""
    import scene_engine as engine

    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        folder.mkdir()
    view = tmp_path / "view"
    engine.make_view(view, folders)
    engine.make_view(view, folders[:1])  # its own links are replaced
    assert [p.name for p in view.iterdir()] == ["a"] and (view / "a").resolve() == folders[0]
    (view / "notes.txt").write_text("mine")
    with pytest.raises(ru.SceneError, match="notes.txt"):
        engine.make_view(view, folders)
    assert (view / "notes.txt").read_text() == "mine"
