"""The stage graph picture: boxes that do not overlap, arrows that touch no box's text."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.text import Annotation

from churn.tracking.plots import flow_chart  # sets the Agg backend


def test_flow_chart_arrows_run_between_boxes():
    """A tall box (the calibrate stage's seven lines) under a wide rank: every arrow starts below
    its upper box and ends above its lower box, and boxes of one rank do not overlap."""
    ranks = [[["ingest", "7,043 read"]], [[f"search: family {i}", "5-fold CV", "0.8453"] for i in range(6)],
             [["calibrate", *[f"line {k}" for k in range(6)]]], [["register"]]]
    fig = flow_chart(ranks, "test")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in ax.texts if not isinstance(t, Annotation)]
    arrows = [a.arrow_patch.get_window_extent(renderer) for a in ax.texts if isinstance(a, Annotation)]
    assert len(boxes) == 9 and len(arrows) == 6 + 6 + 1
    for arrow in arrows:
        for box in boxes:  # an arrow's extent may touch a box's edge, never cross into it
            overlap = min(arrow.y1, box.y1) - max(arrow.y0, box.y0)
            crosses_x = min(arrow.x1, box.x1) > max(arrow.x0, box.x0)
            assert not (crosses_x and overlap > 2), (arrow, box)
    row = sorted(boxes[1:7], key=lambda b: b.x0)
    assert all(a.x1 < b.x0 for a, b in zip(row, row[1:], strict=False))
    plt.close(fig)
