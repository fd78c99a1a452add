"""The MBB beam of the 88-line code through femopt's Python API.

    python docs/examples/api_mbb_beam.py [RESULTS_DIR]

Builds the problem as a dict (the same sections as problems/mbb_beam.yaml), runs it with a
per-iteration callback, prints the summary and exports the outline as SVG. Expected: 94
iterations, compliance 203.18.
"""

import sys

import femopt

problem = femopt.Problem.from_dict({
    "name": "mbb_beam",
    "mesh": {"type": "structured", "shape": [60, 20], "size": [60.0, 20.0]},
    "physics": {"type": "linear_elasticity", "E": 1.0, "nu": 0.3},
    "supports": [{"region": {"face": "x_min"}, "dofs": ["x"]},
                 {"region": {"point": [60.0, 0.0]}, "dofs": ["y"]}],
    "loads": [{"region": {"point": [0.0, 20.0]}, "force": [0.0, -1.0]}],
    "design": {"interpolation": {"type": "simp", "penalty": 3.0, "min": 1.0e-9}},
    "filters": [{"type": "sensitivity", "radius": 1.5}],
    "objective": {"type": "compliance"},
    "constraints": [{"type": "volume", "max": 0.5}],
    "optimizer": {"type": "oc", "move": 0.2, "tol": 0.01, "max_iter": 300},
    "output": {"picture": False},
})


def every_tenth(record) -> None:
    if record.iteration % 10 == 0:
        print(f"iteration {record.iteration}: compliance {record.objective:.2f}, "
              f"volume {record.constraints['volume']:.3f}")


out = sys.argv[1] if len(sys.argv) > 1 else "results/api_mbb_beam"
result = problem.run(out, callback=every_tenth)
print(f"{result.iterations} iterations, compliance {result.objective:.2f}, "
      f"converged {result.summary['converged']}")
print(f"fields: {', '.join(sorted(result.fields()))}; design of {result.density.size} cells")
svg = result.export("svg", force=True)
print(f"wrote {svg['file']}")
