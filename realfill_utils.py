"""Shared pieces of the RealFill scripts: defaults, scene loading, masks, model loading,
generation and compositing, atomic writes.

Conventions used everywhere:
- images are PIL RGB on disk and float tensors in [-1, 1], shape (B, 3, H, W), inside models;
- `fill_mask` is a bool array (H, W) with True = the region to fill (white in `mask.png`),
  `known_mask = ~fill_mask`;
- a scene folder has the RealBench layout: `ref/*`, `target/target.png`, `target/mask.png`,
  optionally `target/gt.png`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# ---------------------------------------------------------------------------------------------
# Defaults shared by training-time validation and infer.py (one home, so they never drift).
# ---------------------------------------------------------------------------------------------
BASE_MODEL = "sd2-community/stable-diffusion-2-inpainting"  # maintained copy of SD2 inpainting
PROMPT = "a photo of sks"  # the paper's "a photo of [V]"; sks is the usual rare token
RESOLUTION = 512  # SD2 inpainting's native size; the paper trains and samples at 512
SCHEDULER = "ddpm"  # the paper samples with DDPM; see SCHEDULERS for faster ones
NUM_INFERENCE_STEPS = 200  # the paper's DDPM step count
GUIDANCE_SCALE = 1.0  # the paper uses no classifier-free guidance
FEATHER_RADIUS = 8  # px, at the target's own size: width of the blend band outside the hole
MASK_THRESHOLD = 128  # 8-bit mask values >= this are "fill"
NUM_IMAGES = 16  # completions per scene, as the paper reports
# loftr_ranking.py: completions with equal correspondence counts are ordered by their distance to
# the per-pixel median of all the completions (nearest first); a ranking file records it
RANKING_TIE_BREAK = "median_rms"
LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' standard LoRA file name
SETTINGS_FILE = "realfill_settings.json"  # written by train_realfill.py next to the LoRA
RECIPE_FILE = "realfill_recipe.json"  # in a base model's folder: its recommended fine-tuning

# The offline default base model: a small SD2-inpainting-shaped pipeline trained by
# train_toy_model.py and committed, so the whole method runs on a CPU without any download.
TOY_MODEL = Path(__file__).resolve().parent / "models" / "toy-sd2-inpainting"

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

logger = logging.getLogger("realfill")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help keeps the docstring's example commands as written and shows the defaults that
    exist (flags whose default is None or False show only their help)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:  # None: the help says; False: off
            return action.help
        return super()._get_help_string(action)


class SceneError(ValueError):
    """Bad user input (scene files, model folders, output folders): the message names the fix."""


# Exit status of every script: one convention, so a shell loop or a scheduler can tell them apart.
EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130  # 1: a stage failed; 2: bad input


def run_main(body, interrupted="interrupted", failed: dict | None = None) -> int:
    """Run a script's `body()` and return its exit status: an int that body returns, else EXIT_OK;
    SceneError -> "error: <message>" and EXIT_INPUT; an exception whose type is a key of
    `failed` -> that key's message (str.format with `err`) and EXIT_FAILED; Ctrl-C ->
    `interrupted` (a string, or a function returning one) and EXIT_INTERRUPTED."""
    failed = failed or {}
    try:
        code = body()
    except SceneError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    except tuple(failed) as err:
        message = next(m for kind, m in failed.items() if isinstance(err, kind))
        print(message.format(err=err), file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(interrupted() if callable(interrupted) else interrupted, file=sys.stderr)
        return EXIT_INTERRUPTED
    return code if isinstance(code, int) else EXIT_OK


def interrupt_on_sigterm() -> None:
    """SIGTERM (kill, scancel, a closing terminal) stops a script that runs other scripts as
    Ctrl-C does: the running stage is stopped with it, nothing is left orphaned, and the exit
    status says "interrupted". For a script's `__main__` (the main thread)."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def note(message: str) -> None:
    """A one-line notice on stderr for the user (not a Python warning with file and line)."""
    print(f"note: {message}", file=sys.stderr, flush=True)


def names_of(paths, limit: int = 8) -> str:
    """'a.png, b.png and 3 more': file names for a message."""
    names = [Path(p).name for p in paths]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# ---------------------------------------------------------------------------------------------
# Images and masks
# ---------------------------------------------------------------------------------------------
ORIENTATION_TAG = 0x0112  # EXIF: 5-8 store the picture turned by 90 degrees


def _header(path: Path) -> tuple[tuple[int, int], int]:
    """(stored width, height) and EXIF orientation, from the header only, at any size."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as image:
            return image.size, int(image.getexif().get(ORIENTATION_TAG, 1) or 1)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _unreadable(path: Path, err: Exception) -> SceneError:
    return SceneError(f"{path}: cannot read this image ({err}); re-save it as PNG or JPEG")


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as load_image returns the image (EXIF rotation applied), read from the
    header without decoding; SceneError if the file cannot be read."""
    path = Path(path)
    try:
        (width, height), orientation = _header(path)
    except FileNotFoundError:
        raise SceneError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise _unreadable(path, err) from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise SceneError(f"{path}: file not found") from None
    except Image.DecompressionBombError:
        width, height = image_size(path)
        raise SceneError(
            f"{path}: {width}x{height} pixels ({width * height / 1e6:.0f} MP), more than PIL "
            f"decodes by default ({2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP, its guard against "
            "decompression bombs): downscale it (RealFill trains at 512 px; 4,000 px on the "
            "long side is plenty)"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise _unreadable(path, err) from None
    return ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF


def _to_8bit(image: Image.Image) -> Image.Image:
    """Map 16-bit and 32-bit single-channel images to 8-bit "L" by their value range."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max() > 255 else 255.0
        return Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        peak = 1.0 if array.max() <= 1.0 else 255.0
        return Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return image


def load_image(path: str | os.PathLike) -> Image.Image:
    """Load any common image as RGB (EXIF rotation applied, alpha composited over white)."""
    image = _to_8bit(_open(Path(path)))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """Load a mask of any mode as bool (H, W), True = fill (white).

    RGBA masks whose colour is constant carry the mask in their alpha channel; all others are
    read by luminance and thresholded at MASK_THRESHOLD, except masks whose values are only 0
    and 1, where 1 is the fill.
    """
    image = _to_8bit(_open(Path(path)))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        array = np.asarray(image)
        colour, alpha = array[..., :-1], array[..., -1]
        if colour.min() == colour.max() and alpha.min() != alpha.max():
            return alpha >= MASK_THRESHOLD
        image = Image.fromarray(colour.squeeze(-1) if colour.shape[-1] == 1 else colour)
    levels = np.asarray(image.convert("L"))
    if levels.max() == 1:  # a 0/1 mask (numpy's habit): 1 is the fill, never a near-black pixel
        return levels == 1
    return levels >= MASK_THRESHOLD


def list_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """Split a folder's entries into sorted image files and ignored entries (hidden, non-image)."""
    images, ignored = [], []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            ignored.append(entry)
        elif entry.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(entry)
        else:
            ignored.append(entry)
    return images, ignored


def scene_sha256(scene_dir: str | os.PathLike) -> str:
    """sha256 over a scene's reference and target files (names and contents): a changed scene
    is a new scene, a moved one is not."""
    import hashlib

    scene_dir = Path(scene_dir)
    digest = hashlib.sha256()  # of (name, file sha256) pairs
    refs, _ = list_images(scene_dir / "ref")
    targets = [scene_dir / "target" / n for n in ("target.png", "mask.png", "gt.png")]
    for path in refs + [p for p in targets if p.is_file()]:
        digest.update(f"{path.relative_to(scene_dir)}\0".encode())
        with open(path, "rb") as file:
            digest.update(hashlib.file_digest(file, "sha256").hexdigest().encode())
    return digest.hexdigest()


def numbered_images(folder: Path) -> list[Path]:
    """A results folder's completions: the images named by a number (0.png, 1.png, ...), in
    numeric order; other files there (a warp fill's uncertainty.png, say) are not completions."""
    images = [p for p in list_images(Path(folder))[0] if p.stem.isdigit()]
    return sorted(images, key=lambda p: int(p.stem))


def natural_key(name: str) -> list:
    """Sort key putting '2.png' before '10.png'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def ranked_images(folder: Path) -> list[Path]:
    """The images loftr_ranking.py ranks in a folder: its numbered completions, or, in a folder
    without any, every image, in natural order."""
    return numbered_images(folder) or sorted(
        list_images(Path(folder))[0], key=lambda p: natural_key(p.name)
    )


@dataclass
class Scene:
    """One RealBench-layout scene, decoded once. `fill_mask`: True = region to fill."""

    scene_dir: Path
    reference_paths: list[Path]
    references: list[Image.Image]
    target: Image.Image
    fill_mask: np.ndarray
    gt: Image.Image | None = None
    ignored: list[Path] = field(default_factory=list)


def check_mask(
    fill_mask: np.ndarray,
    mask_path: Path,
    target_size: tuple[int, int],
    target_path: Path | None = None,
) -> None:
    """Raise SceneError unless the mask matches the target size and has fill and known pixels.
    `target_path`: the target's file, to tell an EXIF rotation apart from a wrong size."""
    height, width = fill_mask.shape
    if (width, height) != tuple(target_size):
        turned = target_path is not None and _turned_by_exif(Path(target_path), (width, height))
        if turned:
            raise SceneError(
                f"{mask_path} is {width}x{height}, as {target_path} is stored, but that target "
                f"carries an EXIF rotation (orientation {turned}), so it is shown, and completed, "
                f"as {target_size[0]}x{target_size[1]}: save the target upright without the EXIF "
                "rotation, or turn the mask the same way"
            )
        raise SceneError(
            f"{mask_path} is {width}x{height} but the target is {target_size[0]}x{target_size[1]}:"
            " masks must match the target size (resize the mask with nearest-neighbour sampling)"
        )
    if not fill_mask.any():
        raise SceneError(f"{mask_path} has no fill pixels: paint the region to fill in white (255)")
    if fill_mask.all():
        raise SceneError(
            f"{mask_path} is white everywhere, so nothing of the target is known: "
            "paint the known region black (0)"
        )


def _turned_by_exif(target_path: Path, mask_size: tuple[int, int]) -> int:
    """The target's EXIF orientation (5-8) if it turns the target away from `mask_size`, the
    size the target is stored at; else 0."""
    try:
        stored, orientation = _header(target_path)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return 0
    return orientation if orientation in (5, 6, 7, 8) and tuple(stored) == mask_size else 0


def load_scene(scene_dir: str | os.PathLike, require_references: bool = True) -> Scene:
    """Load and validate a scene folder; every problem raises SceneError naming file and fix."""
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        raise SceneError(f"{scene_dir}: scene folder not found")
    ref_dir, target_dir = scene_dir / "ref", scene_dir / "target"
    reference_paths, ignored = ([], [])
    if ref_dir.is_dir():
        reference_paths, ignored = list_images(ref_dir)
    if require_references and not reference_paths:
        skipped = f" (skipped: {names_of(ignored)})" if ignored else ""
        raise SceneError(
            f"{ref_dir}: no reference images found{skipped}: put 1-5 photos of the scene "
            f"({', '.join(IMAGE_EXTENSIONS)}) in this folder"
        )
    if ignored:
        note(
            f"{ref_dir}: ignoring {len(ignored)} hidden or non-image entr"
            f"{'y' if len(ignored) == 1 else 'ies'}: {names_of(ignored)}"
        )
    for name in ("target.png", "mask.png"):
        if not (target_dir / name).is_file():
            raise SceneError(
                f"{target_dir / name}: missing; a scene needs target/target.png (the photo to "
                "complete) and target/mask.png (white = region to fill)"
            )
    references = [load_image(p) for p in reference_paths]
    target = load_image(target_dir / "target.png")
    fill_mask = load_mask(target_dir / "mask.png")
    check_mask(fill_mask, target_dir / "mask.png", target.size, target_dir / "target.png")
    gt = None
    if (target_dir / "gt.png").is_file():
        gt = load_image(target_dir / "gt.png")
        if gt.size != target.size:
            raise SceneError(
                f"{target_dir / 'gt.png'} is {gt.size[0]}x{gt.size[1]} but the target is "
                f"{target.size[0]}x{target.size[1]}: the ground truth must match the target size"
            )
    return Scene(scene_dir, reference_paths, references, target, fill_mask, gt, ignored)


def check_output_dir(path: str | os.PathLike) -> Path:
    """Create the output folder if needed and check it is writable, before any model loads."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise SceneError(
            f"{path}: output folder is not writable ({err.strerror}); choose another --output_dir"
        ) from None
    return path


# ---------------------------------------------------------------------------------------------
# Output folders: a script writes only where nothing of the user's lives, and deletes or
# overwrites only entries that it recorded as its own.
# ---------------------------------------------------------------------------------------------
MANIFEST_FILE = ".realfill-outputs.json"  # {"schema_version": 1, "script": ..., "entries": [...]}
LOCK_FILE = ".realfill.lock"  # held by the run writing into the folder


def _inside(path: Path, folder: Path) -> bool:
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def overlaps(a: Path, b: Path) -> bool:
    """Whether one folder is, or lies inside, the other."""
    return _inside(a, b) or _inside(b, a)


def is_main_process() -> bool:
    """Rank 0 of an `accelerate launch` (or a plain run), read from the environment so that it
    can be asked before torch is imported."""
    return os.environ.get("RANK", "0") in ("0", "")


def owned_entries(folder: str | os.PathLike) -> set[str]:
    """Top-level names in `folder` that a script recorded as its outputs (MANIFEST_FILE)."""
    try:
        entries = json.loads((Path(folder) / MANIFEST_FILE).read_text()).get("entries", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {e for e in entries if isinstance(e, str)}


def _manifest_script(folder: Path) -> str | None:
    try:
        return json.loads((folder / MANIFEST_FILE).read_text()).get("script")
    except (OSError, ValueError, AttributeError):
        return None


def claim_output_dir(
    path: str | os.PathLike,
    script: str,
    entries,
    inputs: dict[str, Path] | None = None,
    flag: str = "--output_dir",
    record: bool = True,
) -> Path:
    """Check that `path` may take `script`'s outputs, create it, record them; return the folder.

    `entries`: the top-level names this run writes. Refused with a SceneError that names the
    folder and the fix, before anything is written: a folder that is, holds or lies inside one of
    `inputs` ({what: folder}); a folder with visible entries that no earlier run of `script`
    recorded in its MANIFEST_FILE (the user's files: they are never deleted or overwritten).
    Hidden entries are the user's too, and are left alone. `record=False` only checks (the
    other processes of an `accelerate launch`; rank 0 records).
    """
    path = Path(path)
    for what, folder in (inputs or {}).items():
        if overlaps(path, folder):
            raise SceneError(
                f"{flag} {path} overlaps {what} {folder}: inputs are only read, so put the "
                "output in a folder outside it"
            )
    owner = _manifest_script(path) if path.is_dir() else None
    if owner is not None and owner != script:
        raise SceneError(
            f"{flag} {path} holds the outputs of {owner}, not of {script}: choose another {flag}"
        )
    recorded = owned_entries(path)
    if path.is_file():
        raise SceneError(f"{flag} {path} is a file: pass a folder")
    if path.is_dir():
        foreign = [e for e in sorted(path.iterdir()) if not e.name.startswith(".")]
        foreign = [e for e in foreign if e.name not in recorded]
        if foreign:
            raise SceneError(
                f"{flag} {path} holds {len(foreign)} entr{'y' if len(foreign) == 1 else 'ies'} "
                f"that {script} did not write ({names_of(foreign)}); it deletes and overwrites "
                f"only its own outputs: choose a new or empty {flag}, or move those files away"
            )
    check_output_dir(path)
    if record:
        manifest = {"schema_version": 1, "script": script, "entries": sorted(recorded | {*entries})}
        atomic_write_json(manifest, path / MANIFEST_FILE)
    return path


def adopt_earlier_output(
    path: Path, script: str, signature: str, allowed, inputs: dict[str, Path] | None = None
) -> None:
    """Record as `script`'s own a folder it filled before outputs were recorded: one with no
    MANIFEST_FILE that holds `signature` (a file only `script` writes) and only visible names
    that `allowed(name)` accepts, and that overlaps none of `inputs`. Anything else is left to
    claim_output_dir to judge."""
    path = Path(path)
    if not path.is_dir() or (path / MANIFEST_FILE).exists() or not (path / signature).is_file():
        return
    if any(overlaps(path, folder) for folder in (inputs or {}).values()):
        return
    visible = {p.name for p in path.iterdir() if not p.name.startswith(".")}
    if all(allowed(name) for name in visible):
        record = {"schema_version": 1, "script": script, "entries": sorted(visible)}
        atomic_write_json(record, path / MANIFEST_FILE)


def claim_output_file(
    path: str | os.PathLike,
    script: str,
    is_own,
    inputs: dict[str, Path] | None = None,
    flag: str = "--output_file",
) -> Path:
    """Check that the file `path` may take one of `script`'s outputs, before anything runs:
    refused (SceneError naming the file and the fix) inside one of `inputs` ({what: folder}),
    when it is a folder, or when it exists and `is_own(path)` says `script` did not write it."""
    path = Path(path)
    for what, folder in (inputs or {}).items():
        if _inside(path, folder):
            raise SceneError(
                f"{flag} {path} lies inside {what} {folder}: inputs are only read, so write "
                "it outside"
            )
    if path.is_dir():
        raise SceneError(f"{flag} {path} is a folder: pass a file name")
    if path.exists() and not is_own(path):
        raise SceneError(
            f"{flag} {path} exists and is not a file {script} wrote; it overwrites only its own "
            f"outputs: choose another {flag} or move that file away"
        )
    return path


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, script: str, flag: str = "--output_dir"):
    """Hold LOCK_FILE in `path` for the block: a second run into the same folder is refused
    at once (SceneError), so two runs can never interleave their files."""
    from filelock import FileLock, Timeout

    lock = FileLock(Path(path) / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise SceneError(
            f"{flag} {path}: another {script} run is writing into this folder; wait for it to "
            f"finish or choose another {flag}"
        ) from None
    try:
        yield
    finally:
        lock.release()


# ---------------------------------------------------------------------------------------------
# Atomic writes: a later run trusts what it finds, so nothing half-written may ever be there.
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, is_dir: bool = False):
    """Yield a temporary sibling path; on success it is renamed onto `path` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "" if is_dir else path.suffix  # keep the suffix: PIL picks the format from it
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-")) if is_dir else None
    if not is_dir:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-", suffix=suffix)
        os.close(fd)
        tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        # mkstemp/mkdtemp make them private, and some writers (safetensors) replace the file
        # with a private one of their own: the result follows the umask like every other output.
        tmp.chmod((0o777 if is_dir else 0o666) & ~umask)
        if is_dir and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def replace_between_markers(path: str | os.PathLike, begin: str, end: str, body: str) -> bool:
    """Rewrite the text between the lines `begin` and `end` of a doc (atomically); False, and
    nothing written, where the doc or either marker is missing. How measured tables reach docs."""
    path = Path(path)
    text = path.read_text() if path.is_file() else ""
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with atomic_path(path) as tmp:
        tmp.write_text(head + begin + "\n" + body.rstrip("\n") + "\n" + end + tail)
    return True


def atomic_write_json(obj, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_results(md: Path, record: dict, lines: list[str]) -> None:
    """A measurement's two results files, each atomic: `record` as md's .json, then `lines` as
    the Markdown `md`."""
    atomic_write_json(record, Path(md).with_suffix(".json"))
    with atomic_path(md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def atomic_save_image(image: Image.Image, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp)


# ---------------------------------------------------------------------------------------------
# Geometry and compositing
# ---------------------------------------------------------------------------------------------
def model_size(image_size: tuple[int, int], resolution: int, multiple: int) -> tuple[int, int]:
    """(width, height) to run the model at: the shorter side near `resolution`, aspect kept,
    both sides rounded to a multiple the VAE and UNet accept."""
    width, height = image_size
    scale = resolution / min(width, height)
    return (
        max(multiple, int(round(width * scale / multiple)) * multiple),
        max(multiple, int(round(height * scale / multiple)) * multiple),
    )


def feather(fill_mask: np.ndarray, radius: float) -> np.ndarray:
    """Alpha (H, W) float32 in [0, 1]: 1 in the hole, falling linearly to 0 over `radius` px of
    the known region around it, exactly 0 farther out (so those pixels stay the target's)."""
    from scipy.ndimage import distance_transform_edt

    if radius <= 0:
        return fill_mask.astype(np.float32)
    distance = distance_transform_edt(~fill_mask)  # 0 inside the hole
    return np.clip(1.0 - distance / (radius + 1.0), 0.0, 1.0).astype(np.float32)


def composite(
    generated: Image.Image, target: Image.Image, fill_mask: np.ndarray, radius: float
) -> Image.Image:
    """Alpha-blend `generated` (resized to the target's size) over the original target."""
    if generated.size != target.size:
        generated = generated.resize(target.size, Image.Resampling.LANCZOS)
    alpha = feather(fill_mask, radius)[..., None]
    target_px = np.asarray(target, dtype=np.float32)
    blend = alpha * np.asarray(generated, dtype=np.float32) + (1.0 - alpha) * target_px
    out = np.where(alpha > 0, np.clip(np.rint(blend), 0, 255), target_px)
    return Image.fromarray(out.astype(np.uint8))


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------
def model_recipe(name_or_path: str | os.PathLike) -> dict:
    """The fine-tuning settings a base model's folder recommends (RECIPE_FILE: train_realfill.py
    flag names -> values, under "train"; infer.py's under "infer"), or {} if it has none (the
    real SD2 model: the paper's recipe, train_realfill.py's defaults, applies)."""
    path = Path(name_or_path).expanduser() / RECIPE_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def recipe_flags(settings: dict) -> list[str]:
    """Command-line flags for a {flag name: value} mapping (True -> a bare switch)."""
    flags = []
    for name, value in settings.items():
        if value is False or value is None:
            continue
        flags += [f"--{name}"] if value is True else [f"--{name}", str(value)]
    return flags


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """Local folder of a diffusers pipeline, from a path or a hub id (downloaded or cached).

    Fails fast with a clear SceneError, never a network retry loop, when it cannot be had.
    """
    local = Path(name_or_path).expanduser()
    if local.exists():
        if not (local / "model_index.json").is_file():
            raise SceneError(
                f"{local}: not a diffusers pipeline folder (no model_index.json); pass a folder "
                "written by save_pretrained or a hub id such as " + BASE_MODEL
            )
        return local
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                str(name_or_path),
                local_files_only=hub_offline(),
                allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model"],
                ignore_patterns=["*.fp16.safetensors", "*.ema*", "*nonema*"],
            )
        )
    except Exception as err:  # the hub raises many types; all mean "cannot get it here"
        how = (
            "HF_HUB_OFFLINE is set and it is not in the local cache"
            if hub_offline()
            else f"download failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
        )
        raise SceneError(
            f"base model '{name_or_path}' is unavailable ({how}); pass a local pipeline folder "
            "to --pretrained_model_name_or_path, or run once online to fill the cache"
        ) from None


@dataclass
class Components:
    """The pieces of an SD2-inpainting pipeline that training and inference share."""

    path: Path
    tokenizer: object
    text_encoder: object
    vae: object
    unet: object
    scheduler_config: dict

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Pixel multiple that both the VAE and every UNet downsampling stage accept."""
        return self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)


def config_size_multiple(name_or_path: str | os.PathLike) -> int:
    """Components.size_multiple read from the VAE's and the UNet's config files, so that a
    bad --resolution is refused before anything loads."""
    path = resolve_model_path(name_or_path)
    try:
        vae = json.loads((path / "vae" / "config.json").read_text())["block_out_channels"]
        unet = json.loads((path / "unet" / "config.json").read_text())["block_out_channels"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SceneError(f"{path}: unreadable vae/ or unet/ config.json ({err})") from None
    return 2 ** (len(vae) - 1) * 2 ** (len(unet) - 1)


def load_components(name_or_path: str | os.PathLike, dtype=None) -> Components:
    """Load tokenizer, text encoder, VAE, 9-channel UNet and scheduler config of a base model."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path = resolve_model_path(name_or_path)
    for sub in ("tokenizer", "text_encoder", "vae", "unet", "scheduler"):
        if not (path / sub).is_dir():
            raise SceneError(f"{path}: missing the '{sub}/' subfolder of an SD2 inpainting model")
    tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", dtype=dtype)
    # An unreadable tokenizer folder can load as a 2-token tokenizer without complaint.
    if len(tokenizer) != text_encoder.config.vocab_size:
        raise SceneError(
            f"{path / 'tokenizer'}: tokenizer has {len(tokenizer)} tokens but the text encoder "
            f"expects {text_encoder.config.vocab_size}: the tokenizer files are missing or broken"
        )
    vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype)
    unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype)
    if unet.config.in_channels != 4 + 1 + vae.config.latent_channels:
        raise SceneError(
            f"{path}: the UNet takes {unet.config.in_channels} input channels, not the 9 of an "
            "inpainting model; use an inpainting base such as " + BASE_MODEL
        )
    scheduler_config = dict(DDPMScheduler.load_config(path, subfolder="scheduler"))
    return Components(path, tokenizer, text_encoder, vae, unet, scheduler_config)


SCHEDULERS = {
    "ddpm": "DDPMScheduler",  # the paper's sampler; 200 steps
    "ddim": "DDIMScheduler",  # deterministic, 50 steps is usual
    "dpmsolver++": "DPMSolverMultistepScheduler",  # fast, 20-30 steps
    "euler_a": "EulerAncestralDiscreteScheduler",
}


def make_scheduler(name: str, config: dict):
    import diffusers

    if name not in SCHEDULERS:
        raise SceneError(f"unknown scheduler '{name}': choose one of {', '.join(SCHEDULERS)}")
    cls = getattr(diffusers, SCHEDULERS[name])
    kwargs = {"algorithm_type": "dpmsolver++"} if name == "dpmsolver++" else {}
    return cls.from_config(config, **kwargs)


def make_pipeline(components: Components, scheduler: str = SCHEDULER):
    """A StableDiffusionInpaintPipeline over in-memory components (nothing is reloaded)."""
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline(
        vae=components.vae,
        text_encoder=components.text_encoder,
        tokenizer=components.tokenizer,
        unet=components.unet,
        scheduler=make_scheduler(scheduler, components.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def encode_by_mean(pipe, image: Image.Image, fill_mask: np.ndarray | None = None):
    """Scaled VAE latents (1, 4, h, w) of `image` (PIL, at model size) by the posterior MEAN,
    with the pixels where `fill_mask` is True set to 0 (grey) first, as the pipeline's masked
    image is. The mean makes the conditioning deterministic: diffusers would sample it with
    the first of the per-image generators, so image i would depend on its batch's first seed.
    Training conditions on the mean too."""
    import torch

    pixels = pipe.image_processor.preprocess(image).to(pipe.vae.device, pipe.vae.dtype)
    if fill_mask is not None:
        keep = torch.from_numpy(~fill_mask).to(pixels.device, pixels.dtype)
        pixels = pixels * keep
    with torch.no_grad():
        latents = pipe.vae.encode(pixels).latent_dist.mode()
    return latents * pipe.vae.config.scaling_factor


def generate(
    pipe,
    target: Image.Image,
    fill_mask: np.ndarray,
    seeds: list[int],
    *,
    prompt: str = PROMPT,
    resolution: int = RESOLUTION,
    num_inference_steps: int = NUM_INFERENCE_STEPS,
    guidance_scale: float = GUIDANCE_SCALE,
    multiple: int = 8,
    prior: Image.Image | None = None,
    strength: float = 1.0,
) -> list[Image.Image]:
    """Raw generations, one per seed, in ONE pipeline call, at the model size (not composited).

    Each image has its own generator, so image i depends only on seeds[i], not on the batch.
    The known region reaches the model only through the public `masked_image_latents` (the
    target with its hole greyed, encoded by `encode_by_mean`). With `prior` (an image of the
    target's size whose hole holds a guess, e.g. a warp of a reference) and `strength` < 1,
    sampling starts from the prior's latents noised to `strength` instead of pure noise.
    """
    import torch

    width, height = model_size(target.size, resolution, multiple)
    image = target.resize((width, height), Image.Resampling.LANCZOS)
    small_mask = Image.fromarray(fill_mask.astype(np.uint8) * 255).resize(
        (width, height), Image.Resampling.NEAREST
    )
    masked_latents = encode_by_mean(pipe, image, np.asarray(small_mask) >= MASK_THRESHOLD)
    start = image  # with strength 1 the pipeline starts from pure noise and ignores it
    if prior is not None and strength < 1.0:
        start = encode_by_mean(pipe, prior.resize((width, height), Image.Resampling.LANCZOS))
    generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    result = pipe(
        prompt=[prompt] * len(seeds),
        image=start,
        mask_image=small_mask,
        masked_image_latents=masked_latents,
        strength=strength if prior is not None else 1.0,
        height=height,
        width=width,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        generator=generators,
        output_type="pil",
    )
    return result.images


def quiet_libraries() -> None:
    """Silence library log spam at the source; our own messages use the `realfill` logger."""
    # bitsandbytes, imported by diffusers, warns on every CPU start that an optional kernel
    # package is missing; 8-bit Adam on the GPU does not use it
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*safety_checker.*")


# ---------------------------------------------------------------------------------------------
# LoRA (peft), in the standard diffusers file format
# ---------------------------------------------------------------------------------------------
UNET_LORA_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]  # every attention projection
TEXT_LORA_MODULES = ["q_proj", "k_proj", "v_proj", "out_proj"]
# Where the UNet's LoRA goes (--lora_target). "attention" is the paper's; "attention+conv" adds
# the transformer blocks' projections and feed-forward and the ResNet convolutions, which lets a
# scene's colours and textures, not only its layout, move into the adapter. "full" trains every
# UNet weight instead (no UNet LoRA; the fine-tuned UNet is saved whole in FULL_UNET_DIR, the
# text encoder keeps its LoRA): the most capacity, for tiny bases; on SD2 the UNet's fp32
# weights, gradients and Adam state cost far more memory than LoRA (not measured here).
FULL_TARGET = "full"
FULL_UNET_DIR = "unet"  # where a --lora_target full run keeps its UNet, as a diffusers model
LORA_TARGETS = {
    FULL_TARGET: [],
    "attention": UNET_LORA_MODULES,
    "attention+conv": [
        *UNET_LORA_MODULES,
        "proj_in",
        "proj_out",
        "ff.net.0.proj",
        "ff.net.2",
        "conv1",
        "conv2",
        "conv_shortcut",
        "time_emb_proj",
    ],
}
LORA_TARGET = "attention"


def add_lora(
    unet, text_encoder, rank: int, alpha: float, dropout: float, target: str = LORA_TARGET
) -> None:
    """Attach trainable LoRA adapters to the UNet (at LORA_TARGETS[target]) and to the
    text-encoder attention projections; with target "full", make every UNet weight trainable
    instead of giving it adapters."""
    from peft import LoraConfig

    if target == FULL_TARGET:
        unet.requires_grad_(True)
    for model, modules in ((unet, LORA_TARGETS[target]), (text_encoder, TEXT_LORA_MODULES)):
        if not modules:
            continue
        model.add_adapter(
            LoraConfig(
                r=rank,
                lora_alpha=alpha,
                lora_dropout=dropout,
                init_lora_weights="gaussian",
                target_modules=modules,
            )
        )


def check_safetensors(path: str | os.PathLike) -> None:
    """SceneError unless `path` is a whole safetensors file: its JSON header reads and every
    tensor it lists lies inside the file (a copy cut short fails here, in microseconds, and not
    as a puzzling error after the model has loaded)."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            length = int.from_bytes(file.read(8), "little")
            header = json.loads(file.read(length)) if 0 < length < 100_000_000 else None
        size = path.stat().st_size
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        whole = size >= 8 + length + max(ends, default=0)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, IndexError):
        whole = False
    if not whole:
        raise SceneError(
            f"{path}: not a whole safetensors file (cut short or damaged); copy it again, or "
            "train again"
        )


def save_lora(output_dir: str | os.PathLike, unet, text_encoder) -> Path:
    """Write `pytorch_lora_weights.safetensors` (UNet + text-encoder keys, alpha in metadata)
    atomically, loadable by any StableDiffusionInpaintPipeline.load_lora_weights(output_dir).
    A UNet trained whole (no adapters) contributes no keys: see save_full_unet."""
    from diffusers import StableDiffusionInpaintPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    def metadata(model) -> dict:
        config = model.peft_config["default"].to_dict()
        config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
        return config

    def layers(model) -> dict | None:
        if not getattr(model, "peft_config", None):
            return None
        return convert_state_dict_to_diffusers(
            get_peft_model_state_dict(model, save_embedding_layers=False)
        )

    path = Path(output_dir) / LORA_FILE
    unet_layers = layers(unet)
    with atomic_path(path) as tmp:
        StableDiffusionInpaintPipeline.save_lora_weights(
            tmp.parent,
            unet_lora_layers=unet_layers,
            text_encoder_lora_layers=layers(text_encoder),
            weight_name=tmp.name,
            unet_lora_adapter_metadata=metadata(unet) if unet_layers else None,
            text_encoder_lora_adapter_metadata=metadata(text_encoder),
        )
    return path


def save_full_unet(output_dir: str | os.PathLike, unet) -> Path:
    """Write a UNet trained whole (--lora_target full) to <output_dir>/unet as an ordinary
    diffusers model folder, atomically (written to a temporary sibling, then renamed)."""
    final = Path(output_dir) / FULL_UNET_DIR
    with atomic_path(final, is_dir=True) as tmp:
        unet.save_pretrained(tmp)
    return final


# ---------------------------------------------------------------------------------------------
# The training recipe: one home for the defaults of train_realfill.py, refill.py,
# run_realbench.py, demo.py and the notebook, so they can never drift apart.
# ---------------------------------------------------------------------------------------------
MIXED_PRECISIONS = ("no", "fp16", "bf16")  # accelerate's names; fp16 needs CUDA, bf16 Ampere+/CPU
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")


def _setting(default, help: str):
    """A Recipe field: its default and the one-line help its flag shows."""
    return field(default=default, metadata={"help": help})


@dataclass
class Recipe:
    """RealFill's fine-tuning and sampling settings; the defaults are the paper's (Tang et al.
    2024, Sec. 4 and the supplement) for SD2 inpainting. Field names are the scripts' flags,
    each field's help is its flag's help."""

    pretrained_model_name_or_path: str = _setting(
        BASE_MODEL, "SD2-inpainting base: hub id or local pipeline folder"
    )
    resolution: int = _setting(RESOLUTION, "px, square training crops and sampling size; SD2: 512")
    train_batch_size: int = _setting(16, "samples per step, drawn fresh every step (the paper's)")
    max_train_steps: int = _setting(2000, "training steps (the paper's; ~1 h on an A100)")
    unet_learning_rate: float = _setting(2e-4, "LoRA learning rate of the UNet (the paper's)")
    text_encoder_learning_rate: float = _setting(4e-5, "... and of the text encoder (the paper's)")
    lr_scheduler: str = _setting(
        "constant_with_warmup", "'constant' with --lr_warmup_steps > 0 warms up too"
    )
    lr_warmup_steps: int = _setting(100, "keeps the first LoRA steps from overshooting")
    lora_rank: int = _setting(8, "LoRA rank, >= 1 (the paper's)")
    lora_alpha: float = _setting(16, "LoRA scale is alpha / rank (the paper's: 2 x rank)")
    lora_dropout: float = _setting(0.1, "dropout on the LoRA input (the paper's)")
    lora_target: str = _setting(
        LORA_TARGET,
        "UNet layers that get LoRA: the attention projections (the paper's), or those plus "
        "convolutions and feed-forward (more capacity for small bases); full: train the whole "
        "UNet, no UNet LoRA (tiny bases; on SD2 each checkpoint holds the UNet and Adam state)",
    )
    noise_offset: float = _setting(
        0.0,
        "offset noise: lets fine-tuning move mean colours on a base whose schedule leaks "
        "them; 0 = off (the paper)",
    )
    adam_weight_decay: float = _setting(1e-2, "AdamW's decoupled weight decay (diffusers' default)")
    seed: int = _setting(0, "training seed; completion i is sampled with seed + i")
    mixed_precision: str | None = _setting(
        None,
        "frozen weights in this dtype, LoRA in fp32 (fp16: CUDA only); default: "
        "accelerate's config for training, no (fp32) for sampling",
    )
    num_images: int = _setting(NUM_IMAGES, "completions per scene")
    num_inference_steps: int = _setting(
        NUM_INFERENCE_STEPS, "sampling steps (the paper's DDPM: 200)"
    )
    scheduler: str = _setting(SCHEDULER, "sampler (the paper's: ddpm)")

    INFERENCE = ("num_images", "num_inference_steps", "scheduler")  # the others train
    SHARED = ("seed", "mixed_precision")  # passed to both scripts

    @classmethod
    def for_model(cls, name_or_path: str | os.PathLike | None = None, **given) -> Recipe:
        """The paper's recipe, overlaid with what the base model's folder recommends
        (RECIPE_FILE, e.g. the toy model's), overlaid with `given` values that are not None."""
        name = str(given.get("pretrained_model_name_or_path") or name_or_path or BASE_MODEL)
        record = model_recipe(name)
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.get("train", {}).items() if k in known}
        values |= {k: record["infer"][k] for k in cls.INFERENCE if k in record.get("infer", {})}
        values |= {k: v for k, v in given.items() if v is not None}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"Recipe has no fields {unknown}")
        return cls(**(values | {"pretrained_model_name_or_path": name}))

    def train_flags(self, skip=()) -> list[str]:
        """train_realfill.py's flags for this recipe (not those in `skip`)."""
        names = [f.name for f in fields(self) if f.name not in self.INFERENCE]
        return recipe_flags({n: getattr(self, n) for n in names if n not in skip})

    def infer_flags(self, skip=()) -> list[str]:
        """infer.py's flags for this recipe (not those in `skip`)."""
        names = [*self.INFERENCE, *self.SHARED]
        return recipe_flags({n: getattr(self, n) for n in names if n not in skip})


RECIPE_CHOICES = {
    "lr_scheduler": LR_SCHEDULERS,
    "lora_target": tuple(sorted(LORA_TARGETS)),
    "mixed_precision": MIXED_PRECISIONS,
    "scheduler": tuple(SCHEDULERS),
}


POSITIVE_RECIPE_FLAGS = ("resolution", "train_batch_size", "max_train_steps", "lora_rank",
                         "num_images", "num_inference_steps")  # fmt: skip


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def shell_words(text: str) -> str:
    """argparse type: flags for another script, one string as a shell would split it (kept as
    given; an unclosed quote is refused here, not as a traceback later)."""
    import shlex

    try:
        shlex.split(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{err} in {text!r}") from None
    return text


def add_recipe_flags(
    parser: argparse.ArgumentParser, names, defaults: Recipe | None = None, note: str = ""
) -> None:
    """Add Recipe fields `names` as flags. With `defaults`, they default to its values (shown
    by HelpFormatter); without, to None, so the caller can tell a given flag from an absent one
    (Recipe.for_model fills the rest), and `note` says where the default comes from."""
    by_name = {f.name: f for f in fields(Recipe)}
    paper = Recipe()
    for name in names:
        spec, value = by_name[name], getattr(paper, name)
        kind = float if isinstance(value, float) else int if isinstance(value, int) else str
        if kind is int and name in POSITIVE_RECIPE_FLAGS:
            kind = positive_int
        help = spec.metadata["help"]
        if defaults is None and name == "pretrained_model_name_or_path":
            help = f"{help}; default: {value}"
        elif defaults is None and note and value is not None:
            help = f"{help}; default: {note.format(value=value)}"
        parser.add_argument(
            f"--{name}",
            type=kind,
            default=None if defaults is None else getattr(defaults, name),
            choices=RECIPE_CHOICES.get(name),
            help=help,
        )
