"""Figures (goft.apps.plots): point labels placed where they cover nothing."""

from goft.apps import plots


def test_point_labels_cover_no_other_label_point_or_the_legend():
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    # a crowded corner: five labelled points within a label's width of one another, one unlabelled among them
    labels = [(1e-3 * 1.1**i, 80 + 0.2 * (i % 2), f"0.00{i}167", f"C{i}") for i in range(5)]
    unlabelled = [(1.15e-3, 80.1)]
    ax.plot([x for x, *_ in labels] + [10.0], [y for _, y, *_ in labels] + [60.0], "o", label="points")
    ax.set_xscale("log")
    ax.legend(loc="lower right")
    annotations = plots.label_points(ax, labels, unlabelled)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(renderer) for a in annotations]
    assert [a.get_text() for a in annotations] == [text for *_, text, _ in labels]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    radius = plots.MARKER_RADIUS_PT * fig.dpi / 72
    for px, py in ax.transData.transform([(x, y) for x, y, *_ in labels] + unlabelled):
        assert not any(
            b.x0 < px + radius and px - radius < b.x1 and b.y0 < py + radius and py - radius < b.y1 for b in boxes
        )
    assert not any(b.overlaps(ax.get_legend().get_window_extent(renderer)) for b in boxes)
    plt.close(fig)
