"""Make the example scenes in data/ from photos that scikit-image ships.

Each scene is a RealBench-layout folder `data/Custom/<N>/` (`ref/*`, `target/target.png`,
`target/mask.png` with white = fill, `target/gt.png`). All views of a scene are simulated
cameras looking at one free-licensed photo: perspective warps, crops, zoom and exposure /
white-balance changes. The target is one such view, its ground truth is the same view before
the hole was painted white, and the references are other views that see the hole's content.
The script also writes `data/scenes.json` (every view's homography and light), `data/README.md`
(the scene table) and `data/LICENSES.md` (the photos' origins and licences).

Everything is deterministic: seeded `random.Random`, element-wise float64 arithmetic (no BLAS,
no OpenCV fixed-point remap), and PNG/JPEG written with fixed settings, so a rerun reproduces
the committed files byte for byte.

    python make_example_scenes.py                 # (re)write data/
    python make_example_scenes.py --check         # regenerate in a temp folder, compare with data/
"""

from __future__ import annotations

import argparse
import filecmp
import json
import math
import random
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

import realfill_utils as ru
from realfill_utils import SceneError, atomic_path

SCHEMA_VERSION = 1
CONVENTIONS = {
    "homography": "maps a view pixel (x, y, 1) to photo pixel coordinates (up to scale); "
    "pixel centres at integers",
    "light": "per channel: 255 * min(1, gain * (v / 255) ** gamma), applied to the photo",
    "target_seen / hole_seen": "fraction of the target's (hole) pixels inside that view",
}
SUPERSAMPLE = 3  # k x k samples per output pixel: views shrink the photo by up to 1.9x
PNG_SETTINGS = {"format": "PNG", "compress_level": 9, "optimize": False}
JPEG_SETTINGS = {"format": "JPEG", "quality": 90, "subsampling": 2, "optimize": False}


# ---------------------------------------------------------------------------------------------
# The photos: origin and licence as the scikit-image docstrings state them (scikit-image 0.26).
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Photo:
    name: str  # skimage.data function
    file: str  # file inside skimage.data.data_dir, shipped with the wheel
    what: str
    origin: str
    licence: str


PHOTOS = {
    "chelsea": Photo(
        "chelsea",
        "chelsea.png",
        "Chelsea the cat, 451x300",
        "photograph by Stefan van der Walt",
        'CC0 ("No copyright restrictions. CC0 by the photographer")',
    ),
    "coffee": Photo(
        "coffee",
        "coffee.png",
        "espresso cup on a wooden table, 600x400",
        "photograph by Rachel Michetti, courtesy of Pikolo Espresso Bar",
        'CC0 ("No copyright restrictions. CC0 by the photographer")',
    ),
    "astronaut": Photo(
        "astronaut",
        "astronaut.png",
        "astronaut Eileen Collins, 512x512",
        "NASA Great Images database (https://flic.kr/p/r9qvLn)",
        'public domain ("No known copyright restrictions, released into the public domain")',
    ),
}

# Shipped with scikit-image, free licences per its docstrings, NOT used by any example scene:
# a toy base model trained on these never sees the example scenes' photos.
RESERVED = [
    ("rocket", "rocket.jpg", "Falcon 9 launch, colour 640x427", "SpaceX; public domain"),
    ("hubble_deep_field", "hubble_deep_field.jpg", "colour 1000x872", "NASA; public domain"),
    ("retina", "retina.jpg", "fundus photograph, colour 1411x1411", "Wikimedia; CC0 1.0"),
    (
        "immunohistochemistry",
        "ihc.png",
        "stained tissue, colour 512x512",
        "CMMI; no known copyright restrictions",
    ),
    ("camera", "camera.png", "grey 512x512", "Lav Varshney; CC0"),
    ("clock", "clock_motion.png", "motion-blurred clock, grey 400x300", "public domain"),
    ("coins", "coins.png", "grey 384x303", "Brooklyn Museum; no known copyright restrictions"),
    ("brick", "brick.png", "brick wall texture, grey 512x512", "CC0Textures; CC0"),
    ("grass", "grass.png", "grey 512x512", "DeviantArt (linolafett); CC0"),
    ("gravel", "gravel.png", "grey 512x512", "CC0Textures; CC0"),
    ("cell", "cell.png", "phase image, grey 550x660", "CC0"),
]

# Shipped, but neither used here nor reserved: their docstrings state no licence.
NO_LICENCE_STATED = [
    ("stereo_motorcycle", "Middlebury 2014 stereo pair (true parallax); no licence stated"),
    ("moon", "no licence stated"),
    ("page", "no licence stated"),
    ("colorwheel, logo, checkerboard", "graphics, not photos"),
]


# ---------------------------------------------------------------------------------------------
# Views: a view maps output pixel (x, y) to photo pixel H @ (x, y, 1); pixel centres at integers.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Light:
    """Per-channel exposure gain and a gamma, applied as `255 * (gain * (v / 255) ** gamma)`."""

    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gamma: float = 1.0


@dataclass(frozen=True)
class View:
    """A simulated camera looking at the photo.

    center: view centre as a fraction (x, y) of the photo's size; width: photo pixels spanned
    by the view's width; angle: in-plane rotation in degrees; tilt: perspective terms (x, y),
    about the foreshortening across half the view (0.1 = one side 10% closer); size: (w, h).
    """

    center: tuple[float, float]
    width: float
    size: tuple[int, int]
    angle: float = 0.0
    tilt: tuple[float, float] = (0.0, 0.0)
    light: Light = field(default_factory=Light)
    file: str = "png"  # reference file format: png or jpg


def matmul(a, b):
    """3x3 product in plain Python floats (no BLAS: bit-identical on every CPU)."""
    return [[sum(a[i][k] * b[k][j] for k in range(3)) for j in range(3)] for i in range(3)]


def invert(h):
    """Inverse of a 3x3 matrix by its adjugate, in plain Python floats."""
    (a, b, c), (d, e, f), (g, k, m) = h
    cof = [
        [e * m - f * k, c * k - b * m, b * f - c * e],
        [f * g - d * m, a * m - c * g, c * d - a * f],
        [d * k - e * g, b * g - a * k, a * e - b * d],
    ]
    det = a * cof[0][0] + b * cof[1][0] + c * cof[2][0]
    return [[value / det for value in row] for row in cof]


def view_homography(view: View, photo_size: tuple[int, int]) -> list[list[float]]:
    """Homography from the view's output pixels to the photo's pixels."""
    width, height = view.size
    half = width / 2
    normalize = [[1 / half, 0, -(width - 1) / 2 / half], [0, 1 / half, -(height - 1) / 2 / half]]
    normalize.append([0, 0, 1])
    tilt = [[1, 0, 0], [0, 1, 0], [view.tilt[0], view.tilt[1], 1]]
    scale = view.width / 2
    cos, sin = math.cos(math.radians(view.angle)), math.sin(math.radians(view.angle))
    place = [
        [scale * cos, -scale * sin, view.center[0] * (photo_size[0] - 1)],
        [scale * sin, scale * cos, view.center[1] * (photo_size[1] - 1)],
        [0, 0, 1],
    ]
    return matmul(place, matmul(tilt, normalize))


def apply(h, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map pixel coordinates through a homography, element-wise."""
    w = h[2][0] * x + h[2][1] * y + h[2][2]
    return (h[0][0] * x + h[0][1] * y + h[0][2]) / w, (h[1][0] * x + h[1][1] * y + h[1][2]) / w


def view_corners(h, size: tuple[int, int]) -> list[tuple[float, float]]:
    width, height = size
    xs = np.array([-0.5, width - 0.5, width - 0.5, -0.5])
    ys = np.array([-0.5, -0.5, height - 0.5, height - 0.5])
    px, py = apply(h, xs, ys)
    return list(zip(px.tolist(), py.tolist(), strict=True))


def light_table(light: Light) -> np.ndarray:
    """(3, 256) float64 look-up table, built with Python's math (no SIMD pow)."""
    return np.array(
        [
            [min(255.0, 255.0 * gain * math.pow(v / 255.0, light.gamma)) for v in range(256)]
            for gain in light.gain
        ]
    )


def render(photo: np.ndarray, h, size: tuple[int, int], light: Light) -> np.ndarray:
    """Render a view of `photo` (uint8 HxWx3): bilinear, k x k supersampled, uint8 out."""
    table = light_table(light)
    lit = np.stack([table[c][photo[..., c]] for c in range(3)], axis=-1)
    photo_h, photo_w = photo.shape[:2]
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    total = np.zeros((height, width, 3))
    for sy in range(SUPERSAMPLE):
        for sx in range(SUPERSAMPLE):
            px, py = apply(
                h, x + (sx + 0.5) / SUPERSAMPLE - 0.5, y + (sy + 0.5) / SUPERSAMPLE - 0.5
            )
            total += bilinear(lit, px, py)
    return np.clip(np.rint(total / SUPERSAMPLE**2), 0, 255).astype(np.uint8)


def bilinear(lit: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Sample float (H, W, 3) `lit` at photo coordinates (px, py), edges clamped."""
    photo_h, photo_w = lit.shape[:2]
    x0 = np.clip(np.floor(px), 0, photo_w - 2).astype(np.intp)
    y0 = np.clip(np.floor(py), 0, photo_h - 2).astype(np.intp)
    fx = np.clip(px - x0, 0.0, 1.0)[..., None]
    fy = np.clip(py - y0, 0.0, 1.0)[..., None]
    top = lit[y0, x0] * (1 - fx) + lit[y0, x0 + 1] * fx
    bottom = lit[y0 + 1, x0] * (1 - fx) + lit[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


@dataclass(frozen=True)
class Layer:
    """A foreground cut-out nearer the camera than the photo: an ellipse of another photo,
    pasted onto the background photo, that moves against it between views (parallax).

    center, radii: the ellipse in the layer photo's pixels; position: where its centre sits,
    as a fraction of the background photo's size; scale: background pixels per layer pixel;
    depth_gain: how much nearer than the background it is: a view whose centre moves by d
    background pixels from the target's sees the layer displaced by -depth_gain * d.
    """

    photo: str
    center: tuple[float, float]
    radii: tuple[float, float]
    position: tuple[float, float]
    scale: float
    depth_gain: float

    def shift(self, view: View, target: View, photo_size: tuple[int, int]) -> tuple[float, float]:
        """The layer's displacement in background pixels as `view` sees it."""
        return tuple(
            round(-self.depth_gain * (view.center[i] - target.center[i]) * (photo_size[i] - 1), 4)
            for i in range(2)
        )

    def to_layer(self, px, py, photo_size, shift):
        """Background photo coordinates -> layer photo coordinates, for a view's shift."""
        ox = self.position[0] * (photo_size[0] - 1) + shift[0]
        oy = self.position[1] * (photo_size[1] - 1) + shift[1]
        return (px - ox) / self.scale + self.center[0], (py - oy) / self.scale + self.center[1]

    def covers(self, lx, ly) -> np.ndarray:
        return ((lx - self.center[0]) / self.radii[0]) ** 2 + (
            (ly - self.center[1]) / self.radii[1]
        ) ** 2 <= 1.0


def render_layered(
    photo: np.ndarray,
    layer_photo: np.ndarray,
    layer: Layer,
    shift: tuple[float, float],
    h,
    size: tuple[int, int],
    light: Light,
) -> tuple[np.ndarray, np.ndarray]:
    """Render a view of the background photo with the layer in front of it, as `render`; also
    returns the layer's coverage, float (H, W) in [0, 1]."""
    table = light_table(light)
    lit = np.stack([table[c][photo[..., c]] for c in range(3)], axis=-1)
    lit_layer = np.stack([table[c][layer_photo[..., c]] for c in range(3)], axis=-1)
    photo_size = (photo.shape[1], photo.shape[0])
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    total = np.zeros((height, width, 3))
    coverage = np.zeros((height, width))
    for sy in range(SUPERSAMPLE):
        for sx in range(SUPERSAMPLE):
            px, py = apply(
                h, x + (sx + 0.5) / SUPERSAMPLE - 0.5, y + (sy + 0.5) / SUPERSAMPLE - 0.5
            )
            lx, ly = layer.to_layer(px, py, photo_size, shift)
            front = layer.covers(lx, ly)
            total += np.where(front[..., None], bilinear(lit_layer, lx, ly), bilinear(lit, px, py))
            coverage += front
    image = np.clip(np.rint(total / SUPERSAMPLE**2), 0, 255).astype(np.uint8)
    return image, coverage / SUPERSAMPLE**2


# ---------------------------------------------------------------------------------------------
# Masks, in target pixels; True = fill.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BorderMask:
    """Outpainting: a missing border, as fractions of the target size (left, top, right, bottom)."""

    widths: tuple[float, float, float, float]

    def draw(self, size: tuple[int, int]) -> np.ndarray:
        width, height = size
        left, top, right, bottom = self.widths
        y, x = np.mgrid[0:height, 0:width]
        return (
            (x < round(left * width))
            | (x >= width - round(right * width))
            | (y < round(top * height))
            | (y >= height - round(bottom * height))
        )

    def describe(self) -> str:
        sides = ("left", "top", "right", "bottom")
        missing = [f"{side} {w:.0%}" for side, w in zip(sides, self.widths, strict=True) if w]
        return "missing border: " + ", ".join(missing)


@dataclass(frozen=True)
class BlobMask:
    """Inpainting: an interior hole, the union of rotated ellipses (cx, cy, rx, ry, angle),
    centres and radii as fractions of the target width/height."""

    ellipses: tuple[tuple[float, float, float, float, float], ...]

    def draw(self, size: tuple[int, int]) -> np.ndarray:
        width, height = size
        y, x = np.mgrid[0:height, 0:width].astype(np.float64)
        fill = np.zeros((height, width), dtype=bool)
        for cx, cy, rx, ry, angle in self.ellipses:
            cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
            dx, dy = x - cx * width, y - cy * height
            u, v = (dx * cos + dy * sin) / (rx * width), (dy * cos - dx * sin) / (ry * height)
            fill |= u * u + v * v <= 1.0
        return fill

    def describe(self) -> str:
        if len(self.ellipses) == 1:
            return "interior hole: one ellipse"
        return f"interior hole: union of {len(self.ellipses)} ellipses"


# ---------------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneSpec:
    number: int
    photo: str
    target: View
    references: tuple[View, ...]
    mask: BorderMask | BlobMask
    summary: str
    layer: Layer | None = None  # a foreground that moves against the photo: parallax


def jitter(rng: random.Random, view: View, angle: float, tilt: float) -> View:
    """Perturb a nominal view: exposure +-25%, white balance +-10%, gamma 0.8-1.25, rotation by
    up to `angle` degrees, perspective terms up to `tilt`."""
    exposure = rng.uniform(0.75, 1.25)
    new_light = Light(
        gain=tuple(round(exposure * rng.uniform(0.9, 1.1), 4) for _ in range(3)),
        gamma=round(rng.uniform(0.8, 1.25), 4),
    )
    return View(
        center=view.center,
        width=view.width,
        size=view.size,
        angle=round(view.angle + rng.uniform(-angle, angle), 4),
        tilt=(round(rng.uniform(-tilt, tilt), 4), round(rng.uniform(-tilt, tilt), 4)),
        light=new_light,
        file=view.file,
    )


def scene_specs(seed: int = 2024) -> list[SceneSpec]:
    """The example scenes: nominal views by hand, rotation/perspective/light jitter seeded."""
    rng = random.Random(seed)

    def refs(*views: View) -> tuple[View, ...]:
        return tuple(jitter(rng, v, angle=3.0, tilt=0.1) for v in views)

    return [
        SceneSpec(
            1,
            "chelsea",
            target=View(center=(0.48, 0.5), width=280, size=(256, 170)),
            references=refs(
                View(center=(0.47, 0.5), width=340, size=(256, 170), file="jpg"),
                View(center=(0.56, 0.5), width=170, size=(200, 256), angle=-3.0),
                View(center=(0.5, 0.48), width=350, size=(256, 170), angle=2.0, file="jpg"),
            ),
            mask=BorderMask((0.12, 0.14, 0.12, 0.16)),
            summary="outpainting, border all round; references wider, tilted, re-exposed",
        ),
        SceneSpec(
            2,
            "coffee",
            target=View(center=(0.5, 0.48), width=480, size=(256, 171), tilt=(0.03, -0.02)),
            references=refs(
                View(center=(0.47, 0.5), width=360, size=(256, 220), file="jpg"),
                View(center=(0.55, 0.5), width=440, size=(256, 192)),
            ),
            mask=BlobMask(((0.34, 0.74, 0.1, 0.15, 0.0), (0.64, 0.78, 0.1, 0.17, -25.0))),
            summary="inpainting, cup handle and spoon bowl removed; references zoomed, re-exposed",
        ),
        SceneSpec(
            3,
            "astronaut",
            target=View(center=(0.45, 0.5), width=340, size=(256, 256), angle=1.5),
            references=refs(
                View(center=(0.6, 0.5), width=380, size=(256, 256), file="jpg"),
                View(center=(0.7, 0.55), width=260, size=(192, 256)),
                View(center=(0.56, 0.48), width=400, size=(256, 256), angle=-2.0, file="jpg"),
            ),
            mask=BorderMask((0.0, 0.0, 0.34, 0.0)),
            summary="outpainting, right third missing; references shifted right, tilted",
        ),
        SceneSpec(
            4,
            "astronaut",
            target=View(center=(0.55, 0.45), width=320, size=(256, 192)),
            references=refs(
                View(center=(0.45, 0.45), width=360, size=(256, 192), file="jpg"),
                View(center=(0.63, 0.5), width=300, size=(256, 192)),
                View(center=(0.58, 0.4), width=300, size=(192, 256), file="jpg"),
            ),
            mask=BlobMask(((0.7, 0.5, 0.12, 0.25, 10.0),)),
            summary="parallax: a cut-out of the cat (chelsea) in front of the photo moves against "
            "it between views; the hole covers part of the cat and the background beside it",
            layer=Layer(
                "chelsea",
                center=(240.0, 165.0),
                radii=(120.0, 105.0),
                position=(0.62, 0.45),
                scale=0.45,
                depth_gain=0.5,
            ),
        ),
        SceneSpec(
            5,
            "coffee",
            target=View(center=(0.4, 0.5), width=300, size=(256, 171)),
            references=refs(
                View(center=(0.62, 0.5), width=300, size=(256, 171), file="jpg"),
                View(center=(0.55, 0.45), width=200, size=(192, 256)),
            ),
            mask=BorderMask((0.3, 0.0, 0.0, 0.0)),
            summary="outpainting, left 30% missing; the references show only the right of the "
            "table, so no reference sees the hole",
        ),
    ]


def load_photo(name: str) -> np.ndarray:
    """The photo as uint8 (H, W, 3), read from the file scikit-image ships."""
    import skimage.data

    path = Path(skimage.data.data_dir) / PHOTOS[name].file
    if not path.is_file():
        raise SceneError(
            f"{path}: missing; the example scenes need the photos scikit-image ships "
            "(pip install scikit-image==0.26.0, see requirements-benchmarks.txt)"
        )
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def inside(corners, photo_size: tuple[int, int]) -> bool:
    return all(0 <= x <= photo_size[0] - 1 and 0 <= y <= photo_size[1] - 1 for x, y in corners)


def visible(h_target, view: View, h_view, points: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Which target pixels (x, y) this view sees (bool, same shape as x)."""
    px, py = apply(h_target, *points)
    vx, vy = apply(invert(h_view), px, py)
    width, height = view.size
    return (vx >= -0.5) & (vx <= width - 0.5) & (vy >= -0.5) & (vy <= height - 0.5)


def rounded(h) -> list[list[float]]:
    """The homography scaled to h[2][2] = 1, rounded for scenes.json."""
    return [[round(value / h[2][2], 8) for value in row] for row in h]


def write_scene(spec: SceneSpec, scene_dir: Path) -> dict:
    """Render one scene into `scene_dir` and return its entry for scenes.json."""
    photo = load_photo(spec.photo)
    photo_size = (photo.shape[1], photo.shape[0])
    layer_photo = load_photo(spec.layer.photo) if spec.layer else None

    def draw(view: View, h) -> tuple[np.ndarray, np.ndarray | None]:
        if spec.layer is None:
            return render(photo, h, view.size, view.light), None
        shift = spec.layer.shift(view, spec.target, photo_size)
        return render_layered(photo, layer_photo, spec.layer, shift, h, view.size, view.light)

    (scene_dir / "ref").mkdir(parents=True)
    (scene_dir / "target").mkdir()

    h_target = view_homography(spec.target, photo_size)
    for view, h in [(spec.target, h_target)] + [
        (v, view_homography(v, photo_size)) for v in spec.references
    ]:
        if not inside(view_corners(h, view.size), photo_size):
            raise AssertionError(f"scene {spec.number}: a view leaves the photo: {view}")

    gt, target_layer = draw(spec.target, h_target)
    fill_mask = spec.mask.draw(spec.target.size)
    target = gt.copy()
    target[fill_mask] = 255
    Image.fromarray(gt).save(scene_dir / "target" / "gt.png", **PNG_SETTINGS)
    Image.fromarray(target).save(scene_dir / "target" / "target.png", **PNG_SETTINGS)
    mask = np.where(fill_mask, 255, 0).astype(np.uint8)
    Image.fromarray(mask).save(scene_dir / "target" / "mask.png", **PNG_SETTINGS)

    width, height = spec.target.size
    grid = np.mgrid[0:height, 0:width].astype(np.float64)
    points = (grid[1], grid[0])
    seen_by_any = np.zeros((height, width), dtype=bool)
    references = []
    for i, view in enumerate(spec.references):
        h = view_homography(view, photo_size)
        name = f"{i}.{view.file}"
        settings = JPEG_SETTINGS if view.file == "jpg" else PNG_SETTINGS
        Image.fromarray(draw(view, h)[0]).save(scene_dir / "ref" / name, **settings)
        seen = visible(h_target, view, h, points)
        seen_by_any |= seen
        references.append(
            {
                "file": f"ref/{name}",
                "size": list(view.size),
                "view": view_json(view),
                "homography": rounded(h),
                "target_seen": round(float(seen.mean()), 3),
                "hole_seen": round(float(seen[fill_mask].mean()), 3),
            }
        )
        if spec.layer:
            references[-1]["layer_shift"] = list(spec.layer.shift(view, spec.target, photo_size))
    extra = {}
    if spec.layer:
        on_layer = target_layer >= 0.5
        extra["layer"] = {
            "photo": spec.layer.photo,
            "center": list(spec.layer.center),
            "radii": list(spec.layer.radii),
            "position": list(spec.layer.position),
            "scale": spec.layer.scale,
            "depth_gain": spec.layer.depth_gain,
            "hole_on_layer": round(float(on_layer[fill_mask].mean()), 3),
        }
    return {
        "scene": f"Custom/{spec.number}",
        "photo": spec.photo,
        "task": "outpainting" if isinstance(spec.mask, BorderMask) else "inpainting",
        "mask": spec.mask.describe(),
        "summary": spec.summary,
        "photo_size": list(photo_size),
        "target_size": list(spec.target.size),
        "hole_fraction": round(float(fill_mask.mean()), 3),
        "hole_seen_by_references": round(float(seen_by_any[fill_mask].mean()), 3),
        "target": {"view": view_json(spec.target), "homography": rounded(h_target)},
        "references": references,
    } | extra


def to_json(obj) -> str:
    """JSON with indent 2, but lists of numbers kept on one line."""
    text = json.dumps(obj, indent=2)
    numbers = re.compile(r"\[\s+([-+\d.e,\s]+?)\s+\]")

    def one_line(match: re.Match) -> str:
        return "[" + ", ".join(v.strip() for v in match.group(1).split(",")) + "]"

    return numbers.sub(one_line, text) + "\n"


def view_json(view: View) -> dict:
    return {
        "center": list(view.center),
        "width": view.width,
        "angle": view.angle,
        "tilt": list(view.tilt),
        "gain": list(view.light.gain),
        "gamma": view.light.gamma,
    }


# ---------------------------------------------------------------------------------------------
# data/README.md and data/LICENSES.md, generated so no number in them is typed by hand.
# ---------------------------------------------------------------------------------------------
def readme(manifest: dict) -> str:
    lines = [
        "# Example scenes",
        "",
        "Small RealBench-layout scenes with ground truth, made by `make_example_scenes.py` from",
        "free-licensed photos that scikit-image ships (see `LICENSES.md`). Generated file: do not",
        "edit; change the script and run `python make_example_scenes.py`.",
        "",
        "Every view is a simulated camera looking at a photo: a perspective warp (homography)",
        "of it, with its own crop, zoom, rotation and exposure / white balance. The target is one",
        "view; `gt.png` is that view before its hole was painted white; the references are other",
        "views. Where a scene is one flat photo, one homography maps a view onto another and",
        "there is no parallax between them.",
        *_scene_kinds(manifest["scenes"]),
        "The homography and light of every view are in `scenes.json`.",
        "",
        "| scene | photo | task | mask | target | references | hole | hole seen by refs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scene in manifest["scenes"]:
        refs = ", ".join(
            f"{r['file'][4:]} {r['size'][0]}x{r['size'][1]}" for r in scene["references"]
        )
        lines.append(
            f"| `{scene['scene']}` | {scene['photo']} | {scene['task']} | {scene['mask']} "
            f"| {scene['target_size'][0]}x{scene['target_size'][1]} | {refs} "
            f"| {scene['hole_fraction']:.0%} | {scene['hole_seen_by_references']:.0%} |"
        )
    lines += [
        "",
        "*hole*: fraction of target pixels to fill. *hole seen by refs*: fraction of those",
        "pixels that fall inside at least one reference view.",
        "",
        "Scene notes:",
        "",
    ]
    lines += [f"- `{s['scene']}`: {s['summary']}." for s in manifest["scenes"]]
    lines += [
        "",
        "Use them like RealBench scenes, e.g. `--train_data_dir data/Custom/1`, and give",
        "`--custom_dataset_dir data` to the benchmarks (result folders `Custom-<N>-results`).",
        "",
    ]
    return "\n".join(lines)


def _scene_kinds(scenes: list[dict]) -> list[str]:
    """README sentences on the scenes that break the flat-photo rule or that no reference helps."""

    def names(chosen):
        return ", ".join(f"`{s['scene']}`" for s in chosen)

    layered = [s for s in scenes if "layer" in s]
    unseen = [s for s in scenes if s["hole_seen_by_references"] == 0]
    lines = []
    if layered:
        lines += [
            f"Not so in {names(layered)}: a cut-out of a second photo sits in front of the first,",
            "nearer the camera, and moves against it between views (parallax), so no single",
            "homography aligns a whole view; each reference's shift of the cut-out is in",
            "`scenes.json` (`layer_shift`).",
        ]
    if unseen:
        lines += [
            f"In {names(unseen)} no reference view sees any of the hole: the references show the",
            "scene's style but not the missing content, which only the model's prior can supply.",
        ]
    return lines


def licences() -> str:
    lines = [
        "# Licences of the photos behind the example scenes",
        "",
        "The scenes in `Custom/` are derived (warped, cropped, re-exposed) from these photos,",
        "read from the files scikit-image 0.26 ships in `skimage/data/`. Origins and licences",
        "are as the `skimage.data` docstrings state them.",
        "",
        "| photo (`skimage.data`) | file | content | origin | licence |",
        "|---|---|---|---|---|",
    ]
    for p in PHOTOS.values():
        lines.append(f"| `{p.name}` | `{p.file}` | {p.what} | {p.origin} | {p.licence} |")
    lines += [
        "",
        "## Reserved: not used by any example scene",
        "",
        "Shipped with scikit-image, free licences per its docstrings. A toy base model may be",
        "trained on these; it must not see the photos above, which the example scenes test.",
        "",
        "| photo (`skimage.data`) | file | content | origin; licence |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{name}` | `{file}` | {what} | {lic} |" for name, file, what, lic in RESERVED]
    lines += [
        "",
        "## Not used",
        "",
        "These are shipped too, but their docstrings state no licence (or they are not photos),",
        "so nothing here is derived from them:",
        "",
    ]
    lines += [f"- `{name}`: {why}." for name, why in NO_LICENCE_STATED]
    lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Writing and checking
# ---------------------------------------------------------------------------------------------
def generate(output_dir: Path, seed: int = 2024) -> list[Path]:
    """Write every scene, scenes.json, README.md and LICENSES.md under `output_dir`.

    Each scene folder is replaced as a whole (written aside, then renamed); returns the files
    written, relative to `output_dir`.
    """
    output_dir = Path(output_dir)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "seed": seed,
        "conventions": CONVENTIONS,
        "scenes": [],
    }
    for spec in scene_specs(seed):
        with atomic_path(output_dir / "Custom" / str(spec.number), is_dir=True) as tmp:
            tmp.chmod(0o755)  # mkdtemp makes it private
            manifest["scenes"].append(write_scene(spec, tmp))
    texts = {
        "scenes.json": to_json(manifest),
        "README.md": readme(manifest),
        "LICENSES.md": licences(),
    }
    for name, text in texts.items():
        with atomic_path(output_dir / name) as tmp:
            tmp.write_text(text)
    return produced_files(output_dir, manifest)


def produced_files(output_dir: Path, manifest: dict) -> list[Path]:
    files = [Path(name) for name in ("scenes.json", "README.md", "LICENSES.md")]
    for scene in manifest["scenes"]:
        files += sorted(p.relative_to(output_dir) for p in (output_dir / scene["scene"]).rglob("*"))
    return [f for f in files if (output_dir / f).is_file()]


def compare(expected_dir: Path, actual_dir: Path, files: list[Path]) -> list[str]:
    """Byte-compare `files` between two folders; also list extra files in the scene folders."""
    problems = []
    for name in files:
        actual = actual_dir / name
        if not actual.is_file():
            problems.append(f"{actual}: missing")
        elif not filecmp.cmp(expected_dir / name, actual, shallow=False):
            problems.append(f"{actual}: differs{pixel_note(expected_dir / name, actual)}")
    scene_dirs = {name.parts[0] + "/" + name.parts[1] for name in files if len(name.parts) > 2}
    for scene in sorted(scene_dirs):
        for path in sorted((actual_dir / scene).rglob("*")):
            if path.is_file() and path.relative_to(actual_dir) not in files:
                problems.append(f"{path}: not made by this script (extra file in a scene)")
    return problems


def pixel_note(expected: Path, actual: Path) -> str:
    if expected.suffix not in (".png", ".jpg"):
        return ""
    with Image.open(expected) as a, Image.open(actual) as b:
        a, b = np.asarray(a, dtype=np.int16), np.asarray(b, dtype=np.int16)
    if a.shape != b.shape:
        return f" (size {b.shape[1]}x{b.shape[0]}, expected {a.shape[1]}x{a.shape[0]})"
    if np.array_equal(a, b):
        if actual.read_bytes().startswith(expected.read_bytes()):
            return " (same pixels; bytes added to the file after the image's own)"
        return " (same pixels, other encoding: a different Pillow/zlib/libjpeg version)"
    changed = np.any(a != b, axis=-1) if a.ndim == 3 else a != b
    return f" ({int(changed.sum())} pixels differ, by up to {int(np.abs(a - b).max())})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    parser.add_argument(
        "--output_dir", type=Path, default=Path("data"), help="where Custom/<N>/ scenes go"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temporary folder and compare byte for byte with --output_dir; "
        "writes nothing, exits 1 on any difference",
    )
    args = parser.parse_args(argv)
    if args.check and not args.output_dir.is_dir():
        parser.error(f"--output_dir {args.output_dir}: no such folder to check")  # exit status 2
    return ru.run_main(
        lambda: check(args.output_dir) if args.check else write(args.output_dir),
        interrupted="interrupted: each scene folder is written whole or not at all; run again",
    )


TARGET_FILES = ("target/target.png", "target/mask.png", "target/gt.png")


def check_output(output_dir: Path) -> None:
    """SceneError unless `output_dir` is new, empty, or a folder this script wrote (its
    scenes.json is there) whose scene folders hold only the files that record names: a scene
    folder is replaced whole, so nothing of the user's may be in one."""
    if output_dir.exists() and not output_dir.is_dir():
        raise SceneError(f"--output_dir {output_dir} is a file: pass a folder")
    if not output_dir.is_dir():
        return
    visible = [p for p in output_dir.iterdir() if not p.name.startswith(".")]
    try:
        record = json.loads((output_dir / "scenes.json").read_text())
        scenes = {s["scene"]: {r["file"] for r in s["references"]} for s in record["scenes"]}
    except (OSError, ValueError, KeyError, TypeError):
        if visible:
            raise SceneError(
                f"--output_dir {output_dir} holds files this script did not write (no scenes.json "
                "of its own): choose a new or empty folder"
            ) from None
        return
    for scene, references in scenes.items():
        folder = output_dir / scene
        found = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
        foreign = sorted(found - references - set(TARGET_FILES)) if folder.is_dir() else []
        if foreign:
            raise SceneError(
                f"{folder} holds files this script did not write ({', '.join(foreign[:4])}); "
                "the scene folder is replaced whole: move them away first"
            )


def write(output_dir: Path) -> None:
    """Generate the scenes and README into `output_dir`."""
    check_output(output_dir)
    files = generate(output_dir)
    size = sum((output_dir / f).stat().st_size for f in files)
    print(f"wrote {len(files)} files ({size / 1e3:.0f} kB) under {output_dir}")


def check(output_dir: Path) -> int:
    """Regenerate into a temporary folder; 0 if `output_dir` matches byte for byte, else 1."""
    with tempfile.TemporaryDirectory() as tmp:
        files = generate(Path(tmp))
        problems = compare(Path(tmp), output_dir, files)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        print(
            f"{len(problems)} difference(s): run `python make_example_scenes.py "
            f"--output_dir {output_dir}` to rewrite the scenes (and commit them)",
            file=sys.stderr,
        )
        return ru.EXIT_FAILED
    print(f"{len(files)} files under {output_dir} match a fresh regeneration byte for byte")
    return ru.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
