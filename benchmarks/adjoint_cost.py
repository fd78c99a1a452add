"""Cost of the discrete adjoint on the CPU, relative to the forward solve it reuses.

    python benchmarks/adjoint_cost.py [--repeat N] [--quick]

Three tables:

1. (forward + adjoint) / forward for functions that need an adjoint solve (a
   displacement; a mean temperature under convection): forward = assembly + numeric
   factorization + solve; adjoint = the transposed solve with the stored factors +
   the element sensitivity pass. Goal <= 1.3.
2. Compliance sensitivity / forward: compliance is self-adjoint, so its gradient is
   the element pass alone. Goal <= 5%.
3. Several load cases with one factorization: the factorization once, then the cost
   per load of the forward solves and of the adjoint (solve + element pass). A
   displacement summed over the cases needs one adjoint column whatever their number
   (its right-hand sides differ by the case weights); a stress p-norm needs one per case.

Times are the median of ``--repeat`` runs at a random design (after one warm-up run).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from femopt.adjoint.sensitivity import function_gradients
from femopt.plugins.manager import get_registry
from femopt.problem.load import parse_problem
from femopt.evaluation.model import Model

ELASTIC = """\
mesh: {{type: structured, shape: {shape}, size: {shape}}}
physics: {{type: linear_elasticity}}
supports: [{{region: {{face: x_min}}}}]
load_cases:
{cases}
objective: {{type: {objective}}}
solver: {{type: direct}}
"""
CONVECTION = """\
mesh: {{type: structured, shape: {shape}, size: [2.0, 1.0]}}
physics: {{type: convection_diffusion, fluid_conductivity: 0.001,
          velocity: {{profile: channel, max: 1.0}}}}
supports: [{{region: {{face: x_min}}}}]
loads: [{{body: true, region: {{box: {{min: [0.8, 0.0], max: [1.2, 0.1]}}}}, heat: 1.0}}]
objective: {{type: {objective}}}
"""


def build(text: str) -> Model:
    reg = get_registry()
    return Model(parse_problem(text, "bench.yaml", reg), reg)


def elastic(shape: list[int], objective: str, n_cases: int = 1) -> Model:
    dim = len(shape)
    tip = [float(shape[0])] + [0.0] * (dim - 1)
    cases = "\n".join(
        f"  - {{loads: [{{region: {{point: {tip}}}, force: "
        f"{[0.0] * (dim - 1) + [float(k + 1)] if k % 2 == 0 else [float(k + 1)] + [0.0] * (dim - 1)}}}]}}"
        for k in range(n_cases))
    if objective == "stress_pnorm":
        objective = "stress_pnorm, p: 8.0"
    if objective == "displacement":
        objective = f"displacement, region: {{point: {tip}}}, direction: {[0.0] * (dim - 1) + [1.0]}"
    return build(ELASTIC.format(shape=list(shape), cases=cases, objective=objective))


def median_time(fn, repeat: int, at_least: float = 0.2) -> float:
    """Median over ``repeat`` samples of the time per call; a sample repeats ``fn`` until
    it lasts ``at_least`` seconds (the clock of a virtual machine can be coarse)."""
    once = []
    for _ in range(3):  # calibrate on the fastest of three calls (the first warms up)
        t = time.perf_counter()
        fn()
        once.append(time.perf_counter() - t)
    calls = max(1, int(at_least / max(min(once), 1e-6)))
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t) / calls)
    return float(np.median(times))


def forward_and_adjoint(model: Model, repeat: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    rho = rng.uniform(0.2, 1.0, model.n)
    t_fwd = median_time(lambda: model.path.analyse(rho), repeat)
    state = model.path.analyse(rho)
    dm = model.interp.derivative(rho)
    fns = [model.objective]
    t_adj = median_time(lambda: function_gradients(fns, state, model.solver, model.assembler,
                                                   model.cell_dofs, model.ke, dm), repeat)
    return t_fwd, t_adj


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small sizes only")
    args = ap.parse_args()
    r = args.repeat
    print(f"# adjoint cost on the CPU ({platform.processor() or platform.machine()}, "
          f"median of {r})\n")

    sizes2 = [[100, 50], [200, 100]] if args.quick else [[200, 100], [400, 200], [800, 400]]
    sizes3 = [[20, 10, 10]] if args.quick else [[30, 15, 15], [40, 20, 20]]
    print("## (forward + adjoint) / forward, stored factorization (goal <= 1.3)\n")
    print("| problem | dofs | solver | forward [s] | adjoint [s] | ratio |")
    print("|---|---:|---|---:|---:|---:|")
    for shape in sizes2 + sizes3:
        m = elastic(shape, "displacement")
        tf, ta = forward_and_adjoint(m, r)
        print(f"| elasticity {'x'.join(map(str, shape))}, displacement | "
              f"{m.assembler.free.size} | {m.solver.method} | {tf:.4f} | {ta:.4f} | "
              f"{(tf + ta) / tf:.3f} |")
    for shape in ([[100, 50]] if args.quick else [[200, 100], [400, 200]]):
        m = build(CONVECTION.format(shape=shape, objective="mean_temperature"))
        tf, ta = forward_and_adjoint(m, r)
        print(f"| convection {'x'.join(map(str, shape))}, mean temperature | "
              f"{m.assembler.free.size} | {m.solver.method} (K^T) | {tf:.4f} | {ta:.4f} | "
              f"{(tf + ta) / tf:.3f} |")

    print("\n## compliance sensitivity / forward (goal <= 5%)\n")
    print("| problem | cells | forward [s] | sensitivity [s] | ratio |")
    print("|---|---:|---:|---:|---:|")
    for shape in sizes2 + sizes3:
        m = elastic(shape, "compliance")
        tf, ta = forward_and_adjoint(m, r)
        print(f"| elasticity {'x'.join(map(str, shape))} | {m.n} | {tf:.4f} | {ta:.5f} | "
              f"{100 * ta / tf:.2f}% |")

    shape = sizes2[-1]
    print("\n## several load cases, one factorization (elasticity "
          f"{'x'.join(map(str, shape))})\n")
    print("| load cases | function | factorizations | factorize [s] | forward solves, per "
          "load [s] | adjoint columns | adjoint, per load [s] | (forward + adjoint) / "
          "forward |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for n_cases in (1, 2, 4, 8):
        for objective in ("displacement", "stress_pnorm"):
            m = elastic(shape, objective, n_cases)
            rho = np.random.default_rng(1).uniform(0.2, 1.0, m.n)
            scale = m.interp.value(rho)
            t_fact = median_time(lambda: m.solver.update_operator(scale, m.assembler, m.ke), r)
            t_solve = median_time(lambda: m.solver.solve(m.loads_free), r)
            before = m.solver.factorizations
            state = m.path.analyse(rho)
            dm = m.interp.derivative(rho)
            cols = []
            solve = m.solver.solve
            m.solver.solve = lambda b, transpose=False, x0=None: (
                cols.append(b.shape[1]) or solve(b, transpose, x0))
            function_gradients([m.objective], state, m.solver, m.assembler, m.cell_dofs,
                               m.ke, dm)
            m.solver.solve = solve
            n_fact = m.solver.factorizations - before
            t_adj = median_time(lambda: function_gradients(
                [m.objective], state, m.solver, m.assembler, m.cell_dofs, m.ke, dm), r)
            t_fwd = t_fact + t_solve
            print(f"| {n_cases} | {objective} | {n_fact} | {t_fact:.3f} | "
                  f"{t_solve / n_cases:.4f} | {cols[0]} | {t_adj / n_cases:.4f} | "
                  f"{(t_fwd + t_adj) / t_fwd:.3f} |")


if __name__ == "__main__":
    main()
