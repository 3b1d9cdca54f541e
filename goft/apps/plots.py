"""Figures of the applications: pyplot on a file-only backend, labels that do not cover one another, atomic PNGs."""

from __future__ import annotations

import os
from io import BytesIO
from pathlib import Path

from . import files


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed); imported on first use: it takes a
    second, which commands that draw nothing should not pay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# Where a point's label may go, in points from the point, tried in this order: beside it, then above or below, then
# on its left (right-aligned there), then further out.
LABEL_OFFSETS = ((4, 4), (4, -11), (-4, 4), (-4, -11), (4, 13), (4, -20), (-4, 13), (-4, -20), (10, -4), (-10, -4))
MARKER_RADIUS_PT = 3.5  # the default marker (6 pt wide) and a little air


def label_points(ax, labels, unlabelled=(), fontsize: int = 7) -> list:
    """Annotate points without covering one another: ``labels`` holds ``(x, y, text, colour)`` in data coordinates,
    ``unlabelled`` the ``(x, y)`` of the other plotted points; each label goes to the first of ``LABEL_OFFSETS`` where
    its box overlaps no label placed before it, no point and not the legend, else to the first offset.  Call it once
    the axes hold everything else (limits, scales, legend): the placement is measured on that layout.  Returns the
    annotations."""
    from matplotlib.transforms import Bbox

    fig = ax.figure
    fig.tight_layout()  # save_figure's layout, so that what is measured here is what is saved
    renderer = fig.canvas.get_renderer()
    radius = MARKER_RADIUS_PT * fig.dpi / 72
    obstacles = [
        Bbox.from_extents(px - radius, py - radius, px + radius, py + radius)
        for px, py in ax.transData.transform([(x, y) for x, y, *_ in [*labels, *unlabelled]])
    ]
    legend = ax.get_legend()
    if legend is not None:
        obstacles.append(legend.get_window_extent(renderer))
    annotations = []
    for x, y, text, colour in labels:
        candidates = (*LABEL_OFFSETS, LABEL_OFFSETS[0])  # the first again, kept when no offset was free
        for tried, (dx, dy) in enumerate(candidates, start=1):
            annotation = ax.annotate(
                text,
                (x, y),
                textcoords="offset points",
                xytext=(dx, dy),
                fontsize=fontsize,
                color=colour,
                ha="left" if dx >= 0 else "right",
            )
            box = annotation.get_window_extent(renderer)
            if tried == len(candidates) or not any(box.overlaps(other) for other in obstacles):
                break
            annotation.remove()
        obstacles.append(box)
        annotations.append(annotation)
    return annotations


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write a figure atomically as PNG and close it."""
    buffer = BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=dpi)
    pyplot().close(fig)
    return files.write_bytes(path, buffer.getvalue())
