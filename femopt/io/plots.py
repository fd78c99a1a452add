"""Pictures of a run: the convergence history and the final design."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def convergence_plot(history, path: Path) -> None:
    it = [r.iteration for r in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(it, [r.objective for r in history], color="C0", label="objective")
    ax.set_xlabel("iteration")
    ax.set_ylabel("objective", color="C0")
    names = list(history[0].constraints) if history else []
    if names:
        ax2 = ax.twinx()
        for k, name in enumerate(names):
            ax2.plot(it, [r.constraints[name] for r in history], color=f"C{k + 1}",
                     linestyle="--", label=name)
        ax2.set_ylabel(", ".join(names))
    ax.set_title("convergence")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def design_picture(mesh, rho: np.ndarray, path: Path, threshold: float = 0.5) -> None:
    """2D: the density map. 3D: voxels of the thresholded part (coarsened when large)."""
    g = mesh.grid
    if g is None:
        raise ValueError("design pictures need a structured grid")
    if mesh.dim == 2:
        nx, ny = g.shape
        img = rho.reshape(ny, nx)
        w = 8.0
        fig, ax = plt.subplots(figsize=(w, max(1.5, w * g.shape[1] * g.spacing[1]
                                                  / (g.shape[0] * g.spacing[0]))))
        x0, y0 = g.origin
        ax.imshow(img, cmap="gray_r", vmin=0, vmax=1, origin="lower", interpolation="nearest",
                  extent=(x0, x0 + nx * g.spacing[0], y0, y0 + ny * g.spacing[1]))
        ax.set_aspect("equal")
        ax.set_axis_off()
    else:
        nx, ny, nz = g.shape
        vol = rho.reshape(nz, ny, nx).transpose(2, 1, 0)  # (x, y, z)
        step = max(1, int(np.ceil((vol.size / 60000) ** (1 / 3))))
        if step > 1:  # coarsen by block maxima so thin members stay visible
            sx, sy, sz = (-(-n // step) * step for n in vol.shape)
            pad = np.zeros((sx, sy, sz))
            pad[: vol.shape[0], : vol.shape[1], : vol.shape[2]] = vol
            vol = pad.reshape(sx // step, step, sy // step, step, sz // step, step).max((1, 3, 5))
        filled = vol > threshold
        fig = plt.figure(figsize=(8, 5))
        ax = fig.add_subplot(projection="3d")
        # matplotlib's z axis is up: show the model's y as up
        ax.voxels(filled.transpose(0, 2, 1), facecolors="#6f8fb0", edgecolor="k",
                  linewidth=0.1)
        ax.set_box_aspect((filled.shape[0], filled.shape[2], filled.shape[1]))
        ax.set_xlabel("x")
        ax.set_ylabel("z")
        ax.set_zlabel("y")
        ax.view_init(elev=25, azim=-60)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
