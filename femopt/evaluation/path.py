"""What every evaluation backend provides, and the part they share: turning raw values
and gradients into what an optimizer sees.

A backend (:class:`EvaluationPath`) runs one design x through

    x -> filters -> rho (passive cells fixed) -> state solve -> function values
      -> adjoint solves -> dJ/drho -> chain rule through the filters -> dJ/dx

with its own arrays (NumPy on the CPU, NumPy or CuPy on the device paths). The scaling
of the objective by its first value, the constraints' normalisation and the heuristic
filters' rewrite of the objective gradient are written here once, for every backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.assembly.sparse_vector import dense_of, to_design
from femopt.backend import array_namespace, to_host
from femopt.backend.rows import mean_of
from femopt.errors import InputError, RunError
from femopt.evaluation.function_checks import modal_parts
from femopt.evaluation.robust import INTERMEDIATE, REALIZATIONS
from femopt.evaluation.value_checks import checked_values
from femopt.objectives.base import State
from femopt.optimizers.base import Evaluation


class EvaluationPath:
    """The design chain of ``model`` on one backend. Subclasses implement
    :meth:`values_and_gradients`, :meth:`values_at_fixed_state` and
    :meth:`final_analysis`; the design chain is written here once, over the backend's
    own filter stages and passive arrays.

    Attributes:
        model: the built model (mesh, physics, filters, functions, bounds, solver).
        xp: the array module of the backend's fields (numpy, or cupy).
        stages: the filters as this backend runs them (the model's own on the CPU, their
            device twins on the GPU paths).
        passive_idx, passive_val: the passive cells and their densities, on ``xp``.
    """

    def __init__(self, model: Any, xp: Any = np, stages: list[Any] | None = None):
        self.model, self.xp = model, xp
        self.stages = list(model.filters) if stages is None else stages
        self.passive_idx = xp.asarray(model.passive_idx)
        self.passive_val = xp.asarray(model.passive_val, dtype=xp.float64)

    # -- the design chain ------------------------------------------------------------

    def physical(self, x: Any) -> tuple[Any, list[Any]]:
        """rho from x through the filters; also each filter's input (for the chain rule).
        In a robust problem this is the intermediate design."""
        return self._through(self.stages, x)

    def _through(self, stages: list[Any], x: Any) -> tuple[Any, list[Any]]:
        inputs = []
        # a constant view (the start design) as an array
        start = y = self.xp.ascontiguousarray(x)
        for f in stages:
            inputs.append(y)
            y = f.forward(y)
        # rho is the last stage's new array itself, the passive cells written into it (no
        # copy of the filtered design); a copy where it would be the design or a stage's
        # input (no stage, or one that hands its input back: the sensitivity filter)
        rho = y.astype(self.xp.float64, copy=False)
        if any(self.xp.may_share_memory(rho, a) for a in (start, *inputs)):
            rho = rho.copy()
        rho[self.passive_idx] = self.passive_val
        return rho, inputs

    def chain(self, grad_rho: Any, inputs: list[Any], stages: list[Any] | None = None,
              own: bool = False) -> Any:
        """dJ/dx from dJ/drho through the filters (passive cells get 0); ``own``:
        ``grad_rho`` is the caller's new array, which may be written (no copy)."""
        g = grad_rho if own else grad_rho.copy()
        g[self.passive_idx] = 0.0
        stages = self.stages if stages is None else stages
        for f, xin in zip(reversed(stages), reversed(inputs)):
            g = f.backward(xin, g)
        return g

    def realizations(self, x: Any) -> tuple[list[Any], list[list[Any]], list[list[Any]]]:
        """The physical designs of ``x``: [rho], or a robust problem's [rho_e, rho_i,
        rho_d] (the stages before the projection run once); with each one's filter
        stages and their inputs (for the chain rule)."""
        robust = self.model.robust
        if robust is None:
            rho, inputs = self.physical(x)
            return [rho], [self.stages], [inputs]
        p = robust.index
        shared, y = [], self.xp.ascontiguousarray(x)  # as in _through
        for f in self.stages[:p]:
            shared.append(y)
            y = f.forward(y)
        rhos, chains, traces = [], [], []
        for k in range(len(REALIZATIONS)):
            stages = robust.stages(self.stages, k)
            rho, inputs = self._through(stages[p:], y)
            rhos.append(rho)
            chains.append(stages)
            traces.append(shared + inputs)
        return rhos, chains, traces

    def rows(self) -> list[tuple[int, int]]:
        """(realization, function) of every value :meth:`values_and_gradients` returns."""
        n = len(self.model.bounds) + 1
        if self.model.robust is None:
            return [(0, i) for i in range(n)]
        return self.model.robust.rows(n)

    def modify_objective_gradient(self, x: Any, df: Any) -> Any:
        """The heuristic filters' rewrite of the objective gradient, in chain order."""
        for f in self.stages:
            if f.heuristic:
                df = f.modify_objective_gradient(x, df)
        return df

    # -- analysis of one physical design (each backend's own) ---------------------------

    def use_slot(self, k: int) -> None:
        """Realization ``k`` comes next (a backend that warm-starts its solves keeps
        the last states of each realization)."""

    #: the realization whose eigenvalues :meth:`modal_terms` computes or holds
    modal_slot = 0

    def _use(self, k: int) -> None:
        self.modal_slot = k
        self.use_slot(k)

    def design_terms(self, rho: Any, keep_state: bool = False
                     ) -> tuple[list[float], list[tuple[Any, Any]], State | None]:
        """Values of every function at densities ``rho`` and the pairs (partial_rho,
        adjoint term) of dJ/drho; with ``keep_state`` also the states (else None)."""
        raise NotImplementedError

    def design_values(self, rho: Any, state: State) -> list[float]:
        """Function values at densities ``rho`` with the states of ``state`` fixed."""
        raise NotImplementedError

    def design_final(self, rho: Any, lazy: bool = False
                     ) -> tuple[list[float], np.ndarray, State]:
        """Values, densities and states at ``rho`` (the latter two on the host; with
        ``lazy``, a device path keeps them where they are, as
        :class:`~femopt.backend.rows.RowSource` fields: ``state.u[c]`` node by node)."""
        raise NotImplementedError

    # -- analysis of a design x: every realization, the rows the optimizer sees ---------

    def values_and_gradients(self, x: Any, split: bool = False
                             ) -> tuple[list[float], list[Any]]:
        """Raw values of objective and constraints and their exact gradients w.r.t. x;
        with ``split`` each gradient is the pair (partial_rho term, adjoint term) and the
        model's ``last_state`` keeps the states (a list, one per realization, in a
        robust problem). A robust problem's values are the objective at each
        realization, then every constraint at its own (:meth:`rows`)."""
        rhos, chains, traces = self.realizations(x)
        results = []
        for k, rho in enumerate(rhos):
            self._use(k)
            results.append(self.design_terms(rho, keep_state=split))
        if self.model.robust is not None:
            self.model.robust.observe([r[0] for r in results])
        if split:
            states = [r[2] for r in results]
            self.model.last_state = states[0] if len(states) == 1 else states
        values, grads = [], []
        for k, i in self.rows():
            # each row's terms let go as it is taken: not alive beside the later rows'
            # chain rule (each (realization, function) is one row)
            (pr, adj), results[k][1][i] = results[k][1][i], None
            values.append(results[k][0][i])
            if split:
                grads.append((self.chain(pr, traces[k], chains[k]),
                              self.chain(adj, traces[k], chains[k])))
            else:
                g = pr + adj
                del pr, adj
                grads.append(self.chain(g, traces[k], chains[k], own=True))
                del g
        return values, grads

    def values_at_fixed_state(self, x: Any, state: Any) -> list[float]:
        """Function values at the densities of ``x`` with the states of ``state`` (one
        per realization in a robust problem) held fixed."""
        rhos = self.realizations(x)[0]
        states = state if isinstance(state, list) else [state]
        values = []
        for k, (rho, st) in enumerate(zip(rhos, states)):
            self.modal_slot = k  # the held eigenvalues of this realization
            values.append(self.design_values(rho, st))
        return [values[k][i] for k, i in self.rows()]

    def final_analysis(self, x: Any, lazy: bool = False
                       ) -> tuple[list[float], np.ndarray, State]:
        """Function values, densities and states at ``x`` (the latter two on the host, or
        with ``lazy`` where the path keeps them: :meth:`design_final`). A robust problem
        gives the worst objective of its realizations and each constraint at its own,
        the intermediate design's densities and states, and keeps every realization's
        objective and mean density in the model's ``realization_values``. ``x`` may be
        on the host (a design read back)."""
        rhos = self.realizations(self.xp.asarray(x))[0]
        if self.model.robust is None:
            return self.design_final(rhos[0], lazy)
        finals = {}
        # the intermediate design last: the eigenpairs :meth:`final_modes` gives are its
        for k in [k for k in range(len(rhos)) if k != INTERMEDIATE] + [INTERMEDIATE]:
            self._use(k)
            finals[k] = self.design_final(rhos[k], lazy)
        values = [finals[k][0][i] for k, i in self.rows()]
        self.model.realization_values = {
            name: {"objective": finals[k][0][0], "mean_density": mean_of(finals[k][1])}
            for k, name in enumerate(REALIZATIONS)}
        _, rho, state = finals[INTERMEDIATE]
        n = len(REALIZATIONS)
        worst = min if self.model.maximize else max  # of J itself, not the -J minimized
        return [worst(values[:n])] + values[n:], rho, state

    def linear_constraint(self) -> tuple[Any, float] | None:
        """(w, b) when the one constraint is g(x) = w . x + b, else None: a function of
        the densities alone whose linear form is v . rho (a volume), through linear
        filters (no projection) in a problem that is not robust. With a density filter
        g(x) = normalized(v . (H x / Hs)) = (H^T (v / Hs)) . x + const, so OC's
        bisection takes one dot product per trial instead of a filter pass
        (:func:`femopt.optimizers.oc_kernels.oc_update_linear`). w is None where it is
        an array: the constraint's gradient dg is w (g is linear), and the path keeps no
        copy of it (:meth:`linear_weights` makes one); a w of equal weights (v constant
        through no filter that mixes cells, no passive cell) is one number at stride 0.
        Built on the first call and kept: bounds, filters and passive cells never
        change."""
        if not hasattr(self, "_linear"):
            self._linear = self._linear_constraint()
        return self._linear

    def linear_weights(self) -> Any:
        """The linear constraint's w as an array (or one number at stride 0), made anew:
        the chain rule of the bound's density weights (:meth:`linear_constraint`)."""
        v = self._bound_rho_weights()
        if v is None:
            raise InputError("the problem's constraint is not a linear form of the "
                             "densities: it has no weights w")
        w = self.model.bounds[0].sign_scale() * self.chain(v, [None] * len(self.stages))
        if v.strides == (0,) and bool((w == w[0]).all()):
            # every weight alike (a grid's volume through no filter that mixes cells, no
            # passive cell): one number at stride 0, as v (OC's kernel takes it so)
            w = to_design(self.xp, np.broadcast_to(np.float64(float(w[0])), w.shape))
        return w

    def _linear_constraint(self) -> tuple[Any, float] | None:
        m = self.model
        if (m.robust is not None or len(m.bounds) != 1
                or not all(f.linear for f in self.stages)):
            return None
        v = self._bound_rho_weights()
        if v is None:
            return None
        # rho = H x off the passive cells, fixed on them (a linear filter's chain rule
        # does not read its input)
        w = self.linear_weights()
        return (w if w.strides == (0,) else None), m.bounds[0].normalized(
            self._passive_dot(v))

    def _bound_rho_weights(self) -> Any | None:
        """The one bound's density weights v (g = v . rho) in the path's cell layout, when
        its function is a linear form of the densities alone; else None."""
        fn = self.model.bounds[0].function
        form = None if fn.needs_state else fn.linear_form()
        if form is None or form.needs_state or form.rho_weights is None:
            return None
        return self.xp.asarray(dense_of(form.rho_weights), dtype=self.xp.float64)

    def _passive_dot(self, v: Any) -> float:
        """v . rho over the passive cells."""
        return float(v[self.passive_idx] @ self.passive_val)

    def cheap_constraints(self, x: Any) -> np.ndarray:
        """Normalised constraint values from densities alone (every bound is rho-only)."""
        rho, _ = self.physical(x)
        return np.array([b.normalized(b.function.rho_only_value(rho))
                         for b in self.model.bounds])

    # -- functions of eigenvalues -------------------------------------------------------

    def eigen_indices(self) -> list[int]:
        """Positions (in ``model.functions()``) of the functions of eigenvalues and of the
        sums with terms of eigenvalues."""
        return [k for k, fn in enumerate(self.model.functions()) if modal_parts(fn)]

    def modal_terms(self, rho: Any, gradient: bool = True) -> dict[int, tuple[float, Any]]:
        """Value and dJ/drho (None without ``gradient``) of every function of eigenvalues
        at ``rho``, after the forward operator of ``rho`` is set: the backend's eigensolve
        (:meth:`_eigenpairs`) and, for J(lambda_1..n) with M-normalised phi_i,

            dJ/drho_e = sum_i dJ/dlambda_i phi_i,e^T (m'(rho_e) K0_e
                                                      - lambda_i m_M'(rho_e) M0_e) phi_i,e

        (:meth:`_modal_sensitivity`), no adjoint solve. A weighted sum's terms of
        eigenvalues give sum_j w_j J_j and sum_j w_j dJ_j/drho (its other terms are the
        backend's, added to these)."""
        out = {}
        fns = self.model.functions()
        for k in self.eigen_indices():
            value, grad = 0.0, None
            for j, (w, fn) in enumerate(modal_parts(fns[k])):
                problem = fn.eigen_problem()
                with self.model.registry.guard("function", fn.name, "its eigenproblem"):
                    # key: the grid path warm-starts each eigenproblem from its last modes
                    lams, phis = self._eigenpairs(k if j == 0 else (k, j), problem, rho)
                    fn.last_eigenvalues, fn.last_modes = lams, phis
                    value += w * checked_values(self.model, [fn.eigen_value(lams)], [fn])[0]
                    if gradient:
                        wk = w * np.asarray(fn.eigen_weights(lams), dtype=np.float64)
                        g = self._modal_sensitivity(problem, phis, wk, -wk * lams, rho)
                        grad = g if grad is None else grad + g
            out[k] = (value, grad)
        if not hasattr(self, "_modal_values"):
            self._modal_values = {}
        self._modal_values.update({(self.modal_slot, k): v for k, (v, _) in out.items()})
        return out

    def final_modes(self, lazy: bool = False
                    ) -> list[tuple[int, int | None, np.ndarray, np.ndarray]]:
        """(position in ``model.functions()``, the term's number in a weighted sum (1, 2,
        ... among its terms of eigenvalues; None for a function of eigenvalues itself),
        eigenvalues, (n_modes, n_dofs) host eigenvectors in femopt's dof numbering,
        M-normalised) of every function of eigenvalues at the design analysed last
        (:meth:`final_analysis`: the final design, a robust problem's intermediate one).
        With ``lazy`` the eigenvectors are :meth:`mode_rows`' (node by node, kept on a
        device path's device)."""
        fns = self.model.functions()
        out = []
        for k in self.eigen_indices():
            for j, (_, fn) in enumerate(modal_parts(fns[k]), start=1):
                phis = getattr(fn, "last_modes", None)
                if phis is not None:
                    lams = np.asarray(to_host(fn.last_eigenvalues), dtype=np.float64)
                    out.append((k, None if fn is fns[k] else j, lams,
                                self.mode_rows(phis) if lazy else self.host_modes(phis)))
        return out

    def cell_field(self, a: Any) -> Any:
        """A per-cell field of the final design as the results take it (a host path's:
        on the host)."""
        return to_host(a)

    def mode_rows(self, phis: Any) -> Any:
        """Eigenvectors as the results take them without a host copy of them all: one
        field per mode (a host path's are its rows of :meth:`host_modes`)."""
        return self.host_modes(phis)

    def host_modes(self, phis: Any) -> np.ndarray:
        """Eigenvectors as the backend's ``_eigenpairs`` gave them, (n_modes, n_dofs) on
        the host in femopt's dof numbering."""
        return np.asarray(to_host(phis), dtype=np.float64)

    def held_modal_values(self, values: list[float]) -> list[float]:
        """``values`` (0 for a function of eigenvalues, a sum's other terms for a sum)
        plus the eigenvalue parts at their last computed values (what a function of the
        states does with its states held fixed)."""
        held = getattr(self, "_modal_values", {})
        return [v + held.get((self.modal_slot, k), 0.0) for k, v in enumerate(values)]

    def _eigenpairs(self, key: Any, problem: Any, rho: Any) -> tuple[np.ndarray, Any]:
        """(lambda (n,) on the host, ascending; phi (n, n_states) M-normalised) of
        ``problem`` at ``rho``; ``key`` names the function (for warm starts)."""
        raise NotImplementedError

    def _modal_sensitivity(self, problem: Any, phis: Any, ck: np.ndarray, cm: np.ndarray,
                           rho: Any) -> Any:
        """Per cell m'(rho_e) sum_i ck_i phi_i,e^T K0 phi_i,e + m_M'(rho_e) sum_i cm_i
        phi_i,e^T M0 phi_i,e."""
        raise NotImplementedError

    def _all_finite(self, a: Any) -> bool:
        """Whether every entry of ``a`` is finite (on every rank of a distributed run)."""
        return bool(array_namespace(a).isfinite(a).all())

    #: reductions over the design of a distributed run (None: the arrays are whole)
    reductions: Any = None

    # -- what the optimizer sees -------------------------------------------------------

    def evaluate(self, x: Any) -> Evaluation:
        """Objective and constraints at ``x``, scaled and normalised, with gradients."""
        values, grads = self.values_and_gradients(x)
        return self.evaluation(x, values, grads)

    def evaluation(self, x: Any, values: list[float], grads: list[Any]) -> Evaluation:
        """What the optimizer sees from the raw values and gradients at ``x``: the
        objective divided by its first value (when the optimizer normalises), the
        heuristic filters' objective gradient, constraints g <= 0. A robust problem's
        objective is the worst of its realizations: their scaled values lead ``g`` as
        the rows MMA bounds by its z (``Evaluation.worst_case``). ``grads`` are taken
        over (:meth:`values_and_gradients`' new arrays): scaled in place, and each
        objective gradient let go of as its heuristic rewrite is made."""
        xp, m = array_namespace(x), self.model
        m.evaluations += 1
        k = 1 if m.robust is None else len(REALIZATIONS)
        fs = list(values[:k])
        dfs = []
        for j in range(k):
            d, grads[j] = grads[j], None
            dfs.append(self.modify_objective_gradient(x, d))
            del d
        if m.maximize:  # the optimizers minimize: -J, reported as J (negated in place)
            fs, dfs = [-v for v in fs], [_negated(d) for d in dfs]
        f = max(fs)
        if not all(map(np.isfinite, fs)) or not all(map(self._all_finite, dfs)):
            raise RunError(f"the objective or its gradient is not finite (objective {f})")
        if m.evaluations == 1 and m.normalize and f != 0:
            m.objective_scale = 1.0 / abs(f)
        s = m.objective_scale
        bounds, cv, cg = m.bounds, values[k:], grads[k:]
        g = [b.normalized(v) for b, v in zip(bounds, cv)]
        dg = [_scaled(gr, b.sign_scale()) for b, gr in zip(bounds, cg)]
        del cg
        grads.clear()
        info = {"objective": -f if m.maximize else f,
                **{b.label: v for b, v in zip(bounds, cv)}}
        if k == 1:
            df = _scaled(dfs.pop(), s)
        else:  # min z s.t. f_k <= z: the objective rows lead the constraints
            g = [fk * s for fk in fs] + g
            dg = [_scaled(d, s) for d in dfs] + dg
            df = xp.zeros_like(dfs[0])
            info.update({f"objective_{r}": v for r, v in zip(REALIZATIONS, values[:k])})
        g = xp.asarray(g, dtype=xp.float64)
        # one row: a view of it (the values of a stack, no copy)
        dg = (dg[0][None] if len(dg) == 1 else xp.stack(dg)) if dg else xp.zeros((0, m.n))
        return Evaluation(f * s, df, g, dg, info, worst_case=0 if k == 1 else k)


def _scaled(a: Any, s: float) -> Any:
    """``a * s`` written into ``a`` (an array of the evaluation's own; the same numbers
    as the product)."""
    a *= s
    return a


def _negated(a: Any) -> Any:
    """``-a`` written into ``a`` (as :func:`_scaled`)."""
    return array_namespace(a).negative(a, out=a)
