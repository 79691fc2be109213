"""Matplotlib helpers shared by the experiment plots (headless: the Agg backend)."""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def figure_grid(
    panels: int, columns: int = 3, panel_size: tuple[float, float] = (4.2, 3.2)
) -> tuple[Figure, list[Any]]:
    """A figure with ``panels`` axes in rows of ``columns``; unused cells are hidden."""
    columns = min(columns, panels)
    rows = math.ceil(panels / columns)
    figure, grid = plt.subplots(
        rows, columns, figsize=(panel_size[0] * columns, panel_size[1] * rows), squeeze=False
    )
    axes = [axis for row in grid for axis in row]
    for axis in axes[panels:]:
        axis.set_visible(False)
    return figure, axes[:panels]


def mark_functional_range(axis: Any, half_width: float, label: str = "functional range") -> None:
    """Shade [-half_width, +half_width] on the x axis."""
    axis.axvspan(-half_width, half_width, color="tab:green", alpha=0.08, label=label)
