"""A small PNG of mouth aperture against the audio envelope, drawn with Pillow (no matplotlib
in the environment): one panel per clip; grey = level (dBFS), red = aperture (mm), blue band =
VAD speech, green bands = bilabial windows, dashed lines = the silence and speech thresholds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .checks import BILABIAL_AFTER_S, BILABIAL_BEFORE_S, THRESHOLDS, ClipMeasures, Thresholds

WIDTH, PANEL_HEIGHT, MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP = 760, 190, 52, 52, 22
LEVEL_RANGE = (-70.0, -10.0)
APERTURE_RANGE = (-5.0, 30.0)


def _scale(values, lo, hi, top, height):
    values = np.clip(np.asarray(values, np.float64), lo, hi)
    return top + height - (values - lo) / (hi - lo) * height


def draw_panels(panels: list[tuple[str, ClipMeasures]], path: Path,
                thresholds: Thresholds = THRESHOLDS) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=12)  # the scalable default keeps spaces (the bitmap one drops them)
    image = Image.new("RGB", (WIDTH, PANEL_HEIGHT * len(panels) + 24), "white")
    draw = ImageDraw.Draw(image)
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    height = PANEL_HEIGHT - MARGIN_TOP - 26
    for row, (title, m) in enumerate(panels):
        top = row * PANEL_HEIGHT + MARGIN_TOP
        n = len(m.aperture_mm)
        duration = n / m.fps
        x = MARGIN_LEFT + (np.arange(n) + 0.5) / n * plot_width

        def x_of(seconds):
            return MARGIN_LEFT + seconds / duration * plot_width

        for i in np.nonzero(m.speech)[0]:  # speech frames
            draw.rectangle([x_of(i / m.fps), top, x_of((i + 1) / m.fps), top + height], fill=(222, 232, 250))
        for _, start, end in m.bilabials:
            draw.rectangle([x_of(max(0, start - BILABIAL_BEFORE_S)), top,
                            x_of(min(duration, end + BILABIAL_AFTER_S)), top + height], fill=(205, 240, 205))
        level_y = _scale(np.maximum(m.levels_db, LEVEL_RANGE[0]), *LEVEL_RANGE, top, height)
        draw.line(list(zip(x, level_y)), fill=(120, 120, 120), width=2)
        for value, colour in ((thresholds.silence_max_mm, (200, 120, 0)),
                              (thresholds.speech_open_min_mm, (0, 120, 200))):
            y = float(_scale([value], *APERTURE_RANGE, top, height)[0])
            for x0 in range(MARGIN_LEFT, MARGIN_LEFT + plot_width, 12):
                draw.line([(x0, y), (min(x0 + 6, MARGIN_LEFT + plot_width), y)], fill=colour, width=1)
        aperture_y = _scale(m.aperture_mm, *APERTURE_RANGE, top, height)
        draw.line(list(zip(x, aperture_y)), fill=(210, 30, 30), width=2)
        draw.rectangle([MARGIN_LEFT, top, MARGIN_LEFT + plot_width, top + height], outline=(0, 0, 0))
        draw.text((MARGIN_LEFT, top - 16), title, fill=(0, 0, 0), font=font)
        for value in (-60, -40, -20):  # level axis, left
            y = float(_scale([value], *LEVEL_RANGE, top, height)[0])
            draw.text((4, y - 6), f"{value} dB", fill=(90, 90, 90), font=font)
        for value in (0, 10, 20, 30):  # aperture axis, right
            y = float(_scale([value], *APERTURE_RANGE, top, height)[0])
            draw.text((MARGIN_LEFT + plot_width + 4, y - 6), f"{value} mm", fill=(210, 30, 30), font=font)
        for second in np.arange(0, duration + 1e-9, 0.5):
            draw.text((x_of(second) - 8, top + height + 4), f"{second:.1f}s", fill=(0, 0, 0), font=font)
    legend = ("grey: level (dBFS)   red: mouth aperture (mm)   blue: VAD speech   "
              "green: bilabial window   dashed: thresholds")
    draw.text((8, image.height - 18), legend, fill=(0, 0, 0), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    return path
