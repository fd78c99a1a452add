"""Cost of a shape evaluation on the CPU: values and shape gradients dJ/dX at moved nodes.

    python benchmarks/shape_gradient.py [--repeat N] [--quick]

A quarter plate with a hole (tri3, quad4 in 2D; the plate extruded, tet4 and hex8 in 3D)
with a traction on one edge and a body load, compliance and the volume (the shape
optimization pair), then with a stress p-norm added. Columns: the forward analysis at
the moved nodes (element matrices, assembly, numeric factorization with the kept
symbolic analysis, solve), the gradients (adjoint solves, the dual-number pass of
lambda^T dK/dX u, explicit terms) and the whole ``ShapeEvaluator.evaluate``. Times are
the median of ``--repeat`` runs (after one warm-up run) at a smooth perturbation of the
nodes.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import meshio
import numpy as np

from adjoint_cost import median_time  # noqa: E402 - a sibling script
from femopt.runner import build_model
from femopt.shape import ShapeEvaluator, smooth_direction

MESHIO = {"tri3": "triangle", "quad4": "quad", "tet4": "tetra", "hex8": "hexahedron"}
L, R = 2.0, 0.6


def plate(kind: str, n_r: int, n_t: int, n_z: int = 0):
    """Quarter plate with a hole: radial lines from the hole (radius R) to the edges."""
    s, t = np.meshgrid(np.linspace(0, 1, n_r + 1), np.linspace(0, 1, n_t + 1), indexing="ij")
    th = t * np.pi / 2
    lower = th <= np.pi / 4
    inner = R * np.stack([np.cos(th), np.sin(th)], -1)
    outer = np.where(lower[..., None],
                     np.stack([np.full_like(th, L), L * np.tan(np.where(lower, th, 0))], -1),
                     np.stack([L / np.tan(np.where(lower, np.pi / 4, th)), np.full_like(th, L)],
                              -1))
    pts = ((1 - s[..., None]) * inner + s[..., None] * outer).reshape(-1, 2)
    idx = np.arange(pts.shape[0]).reshape(n_r + 1, n_t + 1)
    quads = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]],
                     -1).reshape(-1, 4)
    if kind == "quad4":
        return pts, quads
    if kind == "tri3":
        return pts, np.vstack([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    n2 = pts.shape[0]
    p3 = np.vstack([np.column_stack([pts, np.full(n2, z)])
                    for z in np.linspace(0, 0.5, n_z + 1)])
    hexes = np.vstack([np.hstack([quads + k * n2, quads + (k + 1) * n2]) for k in range(n_z)])
    if kind == "hex8":
        return p3, hexes
    split = [[0, 1, 2, 6], [0, 2, 3, 6], [0, 3, 7, 6], [0, 7, 4, 6], [0, 4, 5, 6], [0, 5, 1, 6]]
    tets = np.vstack([hexes[:, k] for k in split])
    e = p3[tets[:, 1:]] - p3[tets[:, :1]]
    flip = np.einsum("ij,ij->i", np.cross(e[:, 0], e[:, 1]), e[:, 2]) < 0
    tets[flip] = tets[flip][:, [0, 2, 1, 3]]
    return p3, tets


def model_for(folder: Path, kind: str, n_r: int, n_t: int, n_z: int, stress: bool):
    pts, cells = plate(kind, n_r, n_t, n_z)
    dim = pts.shape[1]
    meshio.write(folder / "plate.vtu", meshio.Mesh(
        np.hstack([pts, np.zeros((len(pts), 3 - dim))]), [(MESHIO[kind], cells)]))
    sup = "".join(f"  - {{region: {{face: {a}_min}}, dofs: [{a}]}}\n" for a in "xyz"[:dim])
    text = (f"mesh: {{type: file, path: plate.vtu}}\nphysics: {{type: linear_elasticity}}\n"
            f"supports:\n{sup}loads:\n"
            f"  - {{region: {{face: x_max}}, force: {[1.0, 0.0, 0.0][:dim]}, distribute: total}}\n"
            f"  - {{body: true, force: {[0.0, -0.1, 0.0][:dim]}}}\n"
            "objective: {type: compliance}\nconstraints:\n  - {type: volume, max: 1.0}\n"
            + ("  - {type: stress_pnorm, max: 10.0}\n" if stress else "")
            + "optimizer: {type: oc}\n")
    (folder / "p.yaml").write_text(text)
    return build_model(folder / "p.yaml", device="cpu")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="the smaller meshes only")
    args = ap.parse_args()
    cases = [("tri3", 25, 50, 0), ("tri3", 50, 50, 0), ("quad4", 50, 100, 0),
             ("tri3", 100, 100, 0), ("tet4", 12, 24, 6), ("hex8", 16, 32, 8)]
    if args.quick:
        cases = cases[:2]
    print(f"# shape evaluation on the CPU ({platform.processor() or platform.machine()}), "
          f"median of {args.repeat}")
    print(f"{'mesh':6s} {'cells':>7s} {'dofs':>7s} {'functions':26s} {'analysis':>9s} "
          f"{'gradients':>9s} {'evaluate':>9s}")
    for kind, n_r, n_t, n_z in cases:
        for stress in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                model = model_for(Path(tmp), kind, n_r, n_t, n_z, stress)
            ev = ShapeEvaluator(model)
            x = model.mesh.points + 0.05 * L / n_t * smooth_direction(model.mesh.points)
            t_an = median_time(lambda: ev.analyse(x), args.repeat)
            t_ev = median_time(lambda: ev.evaluate(x), args.repeat)
            names = "+".join(f.name for f in model.functions())
            print(f"{kind:6s} {model.mesh.n_cells:7d} {model.n_dofs:7d} {names:26s} "
                  f"{t_an:8.3f}s {t_ev - t_an:8.3f}s {t_ev:8.3f}s")


if __name__ == "__main__":
    main()
