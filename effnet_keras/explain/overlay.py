"""Heatmap overlays as PNGs: image + colour map + top-5 classes, and a grid of several.

PIL draws (pillow is a light dependency); the colour map is a small numpy
approximation of "jet" so no plotting library is needed.
"""

import numpy as np


def _pil():
    try:
        from PIL import Image, ImageDraw
    except ImportError as error:
        raise ImportError("Writing CAM overlays needs Pillow: pip install pillow") from error
    return Image, ImageDraw


def jet(values):
    """[..] in [0, 1] -> [.., 3] uint8 (blue -> cyan -> yellow -> red)."""
    v = np.clip(np.asarray(values, dtype="float32"), 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4.0 * v - 3.0), 0.0, 1.0)
    g = np.clip(1.5 - np.abs(4.0 * v - 2.0), 0.0, 1.0)
    b = np.clip(1.5 - np.abs(4.0 * v - 1.0), 0.0, 1.0)
    return (np.stack([r, g, b], axis=-1) * 255).astype("uint8")


def blend(image, heatmap, alpha=0.45):
    """image [H, W, 3] in [0, 255], heatmap [H, W] in [0, 1] -> uint8 overlay."""
    image = np.clip(np.asarray(image, dtype="float32"), 0, 255)
    if image.ndim == 2 or image.shape[-1] == 1:
        image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=-1)
    return ((1 - alpha) * image + alpha * jet(heatmap).astype("float32")).astype("uint8")


def overlay_panel(image, heatmap, top_classes, title="", scale=1):
    """One panel: original | overlay, with the top classes written underneath."""
    Image, ImageDraw = _pil()
    image = np.clip(np.asarray(image, dtype="float32"), 0, 255).astype("uint8")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    pair = np.concatenate([image, blend(image, heatmap)], axis=1)
    panel = Image.fromarray(pair)
    if scale != 1:
        panel = panel.resize((panel.width * scale, panel.height * scale), Image.NEAREST)
    lines = ([title] if title else []) + [f"{label}: {prob:.3f}" for label, prob in top_classes]
    text_height = 12 * len(lines) + 6
    canvas = Image.new("RGB", (max(panel.width, 180), panel.height + text_height), "white")
    canvas.paste(panel, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((3, panel.height + 3 + 12 * i), line, fill="black")
    return canvas


def grid(panels, columns=4):
    Image, _ = _pil()
    if not panels:
        raise ValueError("grid() needs at least one panel.")
    width = max(p.width for p in panels)
    height = max(p.height for p in panels)
    columns = min(columns, len(panels))
    rows = (len(panels) + columns - 1) // columns
    canvas = Image.new("RGB", (columns * width, rows * height), "white")
    for i, panel in enumerate(panels):
        canvas.paste(panel, ((i % columns) * width, (i // columns) * height))
    return canvas
