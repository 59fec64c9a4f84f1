"""Shared by tools/render_showcase.py and tools/style_swap.py: the pictures' Blender side.

- `generate_scene`: the talking head made exactly as `tools/demo.py` makes it (add-on registered
  in bpy-module mode, Add Template Head, the speech as a sound strip, Generate Talking Avatar with
  the bundled model), without rendering;
- `showcase_look`: a three-quarter camera and a light raking down the forehead on top of the
  demo's key / fill / rim lights, Cycles with OpenImageDenoise when this bpy has it;
- `add_closeup_camera`: a second camera on the forehead and eyes;
- `render_array`: one Cycles frame as a float array (through `tools/render_check.py`'s renderer);
- `labelled_tile`, `compose_rows`, `save_png`: Pillow composition of labelled contact sheets;
- `crease_depth`: how much a region of the ratio maps darkens the skin, per frame;
- `wrinkle_region_maps` and `crease_region_vertices`: the synthetic dataset's crease regions
  (forehead, glabella, crows_feet, nasolabial, lips) on the template, as vertex weights and as
  maps in the wrinkle layout, used to measure and to frame the creases.
"""

from __future__ import annotations

import functools
import io
import os
import tempfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]

UPPER_FACE_REGIONS = ("forehead", "glabella", "crows_feet")
LOWER_FACE_REGIONS = ("nasolabial", "lips")
# What a close-up of each crease region frames, and how a caption calls it.
CLOSEUP_GROUPS = {"upper_face": (UPPER_FACE_REGIONS, "forehead and eyes"),
                  "lower_face": (LOWER_FACE_REGIONS, "cheeks and mouth")}


def closeup_group_of(region: str) -> str:
    return "upper_face" if region in UPPER_FACE_REGIONS else "lower_face"


def crease_depth(ratio_maps: np.ndarray, region: np.ndarray) -> np.ndarray:
    """(T,) region-weighted mean of 1 - ratio (ratio averaged over R, G, B): 0 = no crease,
    0.1 = the creased skin is on average 10 % darker than the neutral albedo."""
    maps = np.asarray(ratio_maps, np.float32)
    weight = np.asarray(region, np.float32)
    total = float(weight.sum())
    if total <= 0:
        raise ValueError("the crease region is empty")
    darkening = 1.0 - maps.mean(axis=-1)
    return (darkening * weight).sum(axis=(1, 2)) / total


def strongest_region(ratio_maps_list, region_maps: dict) -> str:
    """The crease region (forehead, glabella, crows_feet, nasolabial, lips) where the given
    sequences of ratio maps differ most from each other (two or more sequences) or, for one
    sequence, darken the skin most on average: where a close-up shows the wrinkles."""
    names = UPPER_FACE_REGIONS + LOWER_FACE_REGIONS
    means = np.array([[crease_depth(maps, region_maps[n]).mean() for n in names] for maps in ratio_maps_list])
    score = np.ptp(means, axis=0) if len(means) > 1 else means[0]
    return names[int(np.argmax(score))]


# --------------------------------------------------------------------------------------------
# Crease regions (numpy only)


@functools.lru_cache(maxsize=2)
def crease_region_vertices(template=None) -> dict[str, np.ndarray]:
    """Soft (V,) weights in [0, 1] of the crease regions on the template (the same regions the
    synthetic dataset creases, `tools/synthetic_textalk4d/geometry.py`)."""
    from tools.synthetic_textalk4d.geometry import region_masks

    from textalker_blender.core.template import load_template

    return region_masks(template or load_template())


def wrinkle_region_maps(resolution: int, template=None) -> dict[str, np.ndarray]:
    """{region: (H, W) float32 weight in [0, 1]} in the wrinkle-map layout (image row order), plus
    "all" (the strongest region at each texel), "upper_face" (forehead, glabella, crow's feet) and
    "lower_face" (nasolabial, lips)."""
    from textalker_blender.core.template import load_template

    template = template or load_template()
    rasterizer = template.uv_rasterizer(resolution, layout="wrinkle")
    regions = crease_region_vertices(template)
    maps = {}
    for name, weights in regions.items():
        values = rasterizer.rasterize(np.asarray(weights, np.float32)[:, None])[..., 0]
        maps[name] = (np.clip(values, 0.0, 1.0) * rasterizer.mask).astype(np.float32)
    maps["all"] = np.max(np.stack([maps[n] for n in regions]), axis=0)
    maps["upper_face"] = np.max(np.stack([maps[n] for n in UPPER_FACE_REGIONS]), axis=0)
    maps["lower_face"] = np.max(np.stack([maps[n] for n in LOWER_FACE_REGIONS]), axis=0)
    return maps


# --------------------------------------------------------------------------------------------
# Blender scene


def generate_scene(work: Path, audio: Path, *, fps: float, resolution: int, samples: int,
                   steps: int = 0, seed: int = 0, speaking_style: str | None = None,
                   wrinkle_style: str | None = None, device: str = "AUTO"):
    """The demo's scene (tools/demo.py: the add-on's own operators) in `work`, nothing rendered.
    Returns (bpy, scene, head, demo summary)."""
    os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="textalker-showcase-"))
    from tools import demo

    argv = ["--out", str(work), "--audio", str(audio), "--frames-to-render", "0", "--fps", str(fps),
            "--resolution", str(resolution), "--samples", str(samples), "--steps", str(steps),
            "--seed", str(seed), "--device", device]
    if speaking_style:
        argv += ["--speaking-style", speaking_style]
    if wrinkle_style:
        argv += ["--wrinkle-style", wrinkle_style]
    summary = demo.main(argv)
    import bpy

    return bpy, bpy.context.scene, bpy.data.objects[summary["object"]], summary


def _region_box(head, names) -> tuple:
    """(world centre, width, height) of the template vertices weighing > 0.3 in `names`."""
    from mathutils import Vector

    from textalker_blender.core.template import load_template

    template = load_template()
    regions = crease_region_vertices(template)
    weight = np.max(np.stack([regions[n] for n in names if n in regions]), axis=0)
    points = template.vertices[weight > 0.3]
    low, high = points.min(axis=0), points.max(axis=0)
    centre = head.matrix_world @ Vector(((low + high) / 2).tolist())
    scale = max(head.matrix_world.to_scale())
    return centre, float(high[0] - low[0]) * scale, float(high[2] - low[2]) * scale


def _forehead_to_chin(head) -> tuple:
    """(world centre, height) of the face from the top of the forehead crease region to the
    bottom of the chin (vertices that jawOpen moves the most): what a portrait frames."""
    from mathutils import Vector

    from textalker_blender.core.template import load_template

    template = load_template()
    x = template.vertices
    forehead = crease_region_vertices(template)["forehead"] > 0.3
    jaw = np.linalg.norm(template.unit_offsets[template.unit_index("jawOpen")], axis=1) * template.face_mask
    chin = jaw > 0.5 * jaw.max()
    top, bottom = float(x[forehead, 2].max()), float(x[chin, 2].min())
    face = x[template.face_mask]
    middle = 0.5 * (face.min(axis=0) + face.max(axis=0))
    centre = head.matrix_world @ Vector((float(middle[0]), float(middle[1]), 0.5 * (top + bottom)))
    return centre, (top - bottom) * max(head.matrix_world.to_scale())


def showcase_look(bpy, scene, head, *, resolution: int, samples: int, azimuth_deg: float = -28.0,
                  elevation_deg: float = 6.0) -> None:
    """A three-quarter portrait with the demo's camera (forehead to chin), a light raking down
    across the forehead, Cycles settings for small renders (fixed seed, so frames differ by the
    animation only; persistent data, so a clip does not rebuild what does not move)."""
    import _cycles
    from mathutils import Vector

    from tools import demo

    centre, height = _forehead_to_chin(head)
    camera = scene.camera
    distance = 1.3 * height * camera.data.lens / camera.data.sensor_width
    demo.aim_camera(camera, centre, distance, azimuth_deg, elevation_deg)
    forehead, width, _ = _region_box(head, ("forehead",))
    # From high above and a little in front: light grazes the forehead (creases facing up-down
    # catch it), while the demo's key light keeps the rest of the face readable.
    demo.add_area_light(bpy, scene, "Forehead raking", 12.0, 0.3,
                        forehead + Vector((-0.1 * width, -0.12, 0.35)), forehead, (1.0, 0.97, 0.92))
    # The wrinkle maps darken the albedo (by up to ~25 % in a crease): a forehead in AgX's
    # compressed highlights hides that, one a little below them shows it (measured: the largest
    # pixel change from the maps grew from 0.035 to 0.043 with the forehead at 0.82 instead of 0.92).
    scene.view_settings.exposure = -0.4
    scene.render.resolution_x = scene.render.resolution_y = resolution
    scene.render.use_persistent_data = True
    scene.cycles.samples = samples
    scene.cycles.seed = 0
    scene.cycles.use_denoising = bool(getattr(_cycles, "with_openimagedenoise", False))
    if scene.cycles.use_denoising:
        scene.cycles.denoiser = "OPENIMAGEDENOISE"


def add_scene_arguments(parser, samples: int, mode: str = "") -> None:
    """The options every rendering tool shares: the speech, the two styles, the frame rate, Cycles
    samples, the device and the scratch folder (`mode`: which of the tool's modes they serve)."""
    prefix = f"{mode}: " if mode else ""
    parser.add_argument("--audio", type=Path, default=None, help=f"{prefix}speech file (default: bundled sample)")
    parser.add_argument("--speaking-style", default=None, help=f"{prefix}style key (default: the first)")
    parser.add_argument("--wrinkle-style", default=None, help=f"{prefix}style key (default: the first)")
    parser.add_argument("--fps", type=float, default=24.0, help=f"{prefix}scene frame rate")
    parser.add_argument("--samples", type=int, default=samples, help="Cycles samples per pixel")
    parser.add_argument("--device", default="AUTO", choices=["AUTO", "CUDA", "CPU"])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder)")


def add_closeup_camera(bpy, scene, head, aspect: float = 2.0, group: str = "upper_face"):
    """A camera framing a group of crease regions (`CLOSEUP_GROUPS`: "upper_face" = forehead,
    glabella, crow's feet; "lower_face" = nasolabial folds and lips), nearly frontal; not made the
    scene camera. Render it at an aspect of `aspect`:1."""
    # The eyes whole, not only the crow's-feet band beside them.
    lower = 0.1 if group == "upper_face" else 0.0
    return region_camera(bpy, scene, head, CLOSEUP_GROUPS[group][0], aspect, lower_by=lower)


def region_camera(bpy, scene, head, regions, aspect: float = 2.0, margins=(1.15, 1.3), elevation: float = 8.0,
                  lower_by: float = 0.0, name: str = "Close-up"):
    """An 85 mm camera framing the template vertices of the crease `regions` (weight > 0.3) with
    `margins` (x width, x height), 10 degrees from the face's right and `elevation` degrees above,
    its aim lowered by `lower_by` x the regions' height; not made the scene camera."""
    from tools import demo

    centre, width, height = _region_box(head, regions)
    data = bpy.data.cameras.new(name)
    data.lens = 85.0
    data.sensor_width = 36.0
    data.sensor_fit = "HORIZONTAL"
    frame_width = max(margins[0] * width, margins[1] * height * aspect)
    camera = bpy.data.objects.new(name, data)
    centre.z -= lower_by * height
    demo.aim_camera(camera, centre, frame_width * data.lens / data.sensor_width, -10.0, elevation)
    scene.collection.objects.link(camera)
    return camera


def render_array(bpy, scene, frame: int, path: Path) -> np.ndarray:
    """Renders `frame` with the scene camera to `path` (PNG) and returns it, float (H, W, 3) in
    display values 0-1, top row first."""
    from tools import render_check

    scene.render.image_settings.media_type = "IMAGE"
    scene.render.image_settings.file_format = "PNG"
    return render_check._render(bpy, scene, frame, path)


def render_wrinkle_contribution(bpy, scene, frame: int, work: Path, gain: float = 10.0) -> np.ndarray:
    """|render with the wrinkle maps - render without| x gain at `frame` (scene camera): what the
    add-on's "TexTalker Wrinkles" node groups add to the picture (muted = albedo unchanged), as
    tools/render_check.py measures it."""
    from tools import render_check

    nodes = render_check._wrinkle_group_nodes(bpy)
    if not nodes:
        raise RuntimeError("the scene has no TexTalker wrinkle node group")
    with_maps = render_array(bpy, scene, frame, work / f"with_wrinkles_{frame:04d}.png")
    for node in nodes:
        node.mute = True
    try:
        without = render_array(bpy, scene, frame, work / f"without_wrinkles_{frame:04d}.png")
    finally:
        for node in nodes:
            node.mute = False
    return np.clip(gain * np.abs(with_maps - without), 0.0, 1.0)


def ratio_map_picture(ratio: np.ndarray, gain: float = 4.0) -> np.ndarray:
    """A wrinkle-ratio map (H, W, 3) as a picture: white = neutral, darker = deeper crease
    (1 - gain * (1 - ratio)), so faint creases stay visible."""
    return np.clip(1.0 - gain * (1.0 - np.asarray(ratio, np.float32)), 0.0, 1.0)


def region_crop(region: np.ndarray, threshold: float = 0.05, margin: int = 2) -> tuple[slice, slice]:
    """Rows and columns of a map around the texels where `region` > threshold."""
    rows = np.flatnonzero(region.max(axis=1) > threshold)
    cols = np.flatnonzero(region.max(axis=0) > threshold)
    if not len(rows) or not len(cols):
        return slice(None), slice(None)
    return (slice(max(0, rows.min() - margin), rows.max() + 1 + margin),
            slice(max(0, cols.min() - margin), cols.max() + 1 + margin))


def map_picture(ratio: np.ndarray, crop: tuple[slice, slice], height: int, gain: float = 4.0) -> np.ndarray:
    """The cropped ratio map as a picture (see `ratio_map_picture`), scaled by an integer factor
    (nearest: texels stay visible) to about `height` rows."""
    picture = ratio_map_picture(ratio[crop], gain)
    scale = max(1, int(round(height / max(picture.shape[0], 1))))
    return np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1)


def read_generated_offsets(head) -> np.ndarray:
    """(T, V, 3) offsets in the mesh's local frame of the add-on's keys (frame i = key i)."""
    from textalker_blender.blender import writers

    names = writers.generated_key_names(head)
    blocks = head.data.shape_keys.key_blocks
    n_vertices = len(head.data.vertices)
    basis = np.empty(n_vertices * 3, np.float32)
    head.data.shape_keys.reference_key.data.foreach_get("co", basis)
    offsets = np.empty((len(names), n_vertices * 3), np.float32)
    for i, name in enumerate(names):
        blocks[name].data.foreach_get("co", offsets[i])
        offsets[i] -= basis
    return offsets.reshape(len(names), n_vertices, 3)


def read_generated_wrinkle_maps(bpy, head) -> np.ndarray:
    """(T, H, W, 3) float32 ratio maps (image row order) read back from the add-on's EXR files."""
    from textalker_blender.blender import writers

    folder = writers.output_folder_of(head)
    paths = sorted(folder.glob(f"{writers.IMAGE_PREFIX}[0-9]*.exr"))
    maps = []
    for path in paths:
        image = bpy.data.images.load(str(path), check_existing=False)
        image.colorspace_settings.name = "Non-Color"
        width, height = image.size
        pixels = np.empty(width * height * 4, np.float32)
        image.pixels.foreach_get(pixels)
        bpy.data.images.remove(image)
        maps.append(pixels.reshape(height, width, 4)[::-1, :, :3])
    return np.stack(maps)


# --------------------------------------------------------------------------------------------
# Pictures (Pillow)


def to_uint8(array: np.ndarray) -> np.ndarray:
    return (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def labelled_tile(array: np.ndarray, lines: list[str] | str, font_size: int = 13):
    """The picture with a dark caption bar (one or more lines) above it."""
    from PIL import Image, ImageDraw

    lines = [lines] if isinstance(lines, str) else list(lines)
    picture = Image.fromarray(to_uint8(array) if array.dtype != np.uint8 else array)
    bar = (font_size + 4) * len(lines) + 4
    tile = Image.new("RGB", (picture.width, picture.height + bar), (18, 18, 20))
    tile.paste(picture, (0, bar))
    draw = ImageDraw.Draw(tile)
    font = _font(font_size)
    for i, line in enumerate(lines):
        draw.text((4, 3 + i * (font_size + 4)), line, fill=(235, 235, 235), font=font)
    return tile


def wrap_text(text: str, font, width: float) -> list[str]:
    """Greedy word wrap of `text` into lines no wider than `width` pixels in `font`."""
    lines, line = [], ""
    for word in text.split(" "):
        candidate = f"{line} {word}".strip()
        if line and font.getlength(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + [line]


def compose_rows(rows: list[list], gap: int = 4, title: str | None = None, font_size: int = 15):
    """Rows of tiles (PIL images) on a dark background, each row left-aligned; an optional title
    above them, wrapped to the sheet's width."""
    from PIL import Image, ImageDraw

    widths = [sum(t.width for t in row) + gap * (len(row) - 1) for row in rows]
    heights = [max(t.height for t in row) for row in rows]
    width = max(widths) + 2 * gap
    font = _font(font_size)
    title_lines = wrap_text(title, font, width - 2 * gap - 4) if title else []
    top = (font_size + 5) * len(title_lines) + (6 if title_lines else 0)
    sheet = Image.new("RGB", (width, top + sum(heights) + gap * (len(rows) + 1)), (10, 10, 12))
    y = top + gap
    for row, height in zip(rows, heights):
        x = gap
        for tile in row:
            sheet.paste(tile, (x, y))
            x += tile.width + gap
        y += height + gap
    draw = ImageDraw.Draw(sheet)
    for i, line in enumerate(title_lines):
        draw.text((gap + 2, 4 + i * (font_size + 5)), line, fill=(245, 245, 245), font=font)
    return sheet


def save_png(image, path: Path, max_bytes: int | None = None) -> dict:
    """Writes `image` as PNG; when larger than `max_bytes`, as a 256-colour palette PNG instead
    (Floyd-Steinberg dithered: smooth skin stays smooth). Returns {"bytes", "palette"}."""
    from PIL import Image

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    palette = False
    if max_bytes is not None and buffer.tell() > max_bytes:
        buffer = io.BytesIO()
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                       dither=Image.Dither.FLOYDSTEINBERG).save(buffer, format="PNG", optimize=True)
        palette = True
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(buffer.getvalue())
    return {"bytes": len(buffer.getvalue()), "palette": palette}
