"""Shared fixtures: a tiny SD2-inpainting-shaped model built from configs, and small scenes."""

from __future__ import annotations

import hashlib
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


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path) -> sha256 of its bytes: compare two to see
    that nothing was written, changed or removed."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


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


def reset_accelerate() -> None:
    """Forget accelerate's process-wide state, as a fresh interpreter would: a script's main()
    run in this process may then ask for another precision than the last one did."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def run_main_in_process(main, argv: list, log: Path | None = None) -> int:
    """A script's main(argv) in this process, its output to `log` if given: the same code and
    exit status as `python script.py ...`, without a fresh interpreter's 10-s imports."""
    import contextlib

    with contextlib.ExitStack() as stack:
        if log is not None:  # as scene_engine.run_command does
            Path(log).parent.mkdir(parents=True, exist_ok=True)
            out = stack.enter_context(open(log, "w"))
            stack.enter_context(contextlib.redirect_stdout(out))
            stack.enter_context(contextlib.redirect_stderr(out))
        try:
            return main([str(a) for a in argv])
        finally:
            reset_accelerate()


def scripts_in_process(patch: pytest.MonkeyPatch) -> None:
    """Through `patch`, scene_engine.run_script runs train_realfill.py and infer.py in this
    process (their own main(argv)); every other script still runs as a subprocess."""
    import infer
    import scene_engine as engine
    import train_realfill

    real_run_script = engine.run_script
    mains = {engine.TRAIN_SCRIPT.name: train_realfill.main, engine.INFER_SCRIPT.name: infer.main}

    def run_script(command, log=None, tie_to_parent=False, cwd=None, echo=False):
        main = mains.get(Path(command[0]).name)
        if main is None or cwd is not None:
            return real_run_script(command, log, tie_to_parent, cwd, echo)
        code = run_main_in_process(main, command[1:], log)
        if code:
            raise engine.StageFailed(f"{Path(command[0]).name} exited with status {code}")

    patch.setattr(engine, "run_script", run_script)
