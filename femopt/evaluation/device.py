"""The design chain with every field on a device (CuPy, or NumPy for the CPU twins): what
the grid path (:mod:`.grid_device`) and the mesh path (:mod:`.mesh_device`) share.

One design iteration:

    x -> filters (each filter's device twin: a stencil or CSR weights, or the filter
         itself when it is pointwise) -> rho -> m(rho)
      -> the forward solve of every load case (warm start from the previous states)
      -> adjoint solves with the same solver object (its hierarchy or preconditioner as
         built for this design; K is symmetric), warm-started from the previous ones:
         one per functional group of a linear form, one per load case of an integrand
         function (right-hand side -dJ/du from its generated partials)
      -> dJ/drho in one pass over cells for all load cases and adjoints
      -> chain rule through the filters -> OC or MMA.

Only scalars reach the host until the results are written. A subclass says how the
states are laid out (grid layout, or the free dofs of a mesh) and supplies the operator,
the solve and the adjoint term; :func:`capability` says what a model needs to run here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.assembly.sparse_vector import dense_of, to_design
from femopt.backend import to_host
from femopt.backend.rows import RowSource, cell_rows
from femopt.evaluation.device_forms import DeviceForm, group_functionals
from femopt.errors import RunError
from femopt.evaluation.path import EvaluationPath
from femopt.evaluation.value_checks import check_terms, checked_values
from femopt.objectives.base import State


def capability(model: Any) -> str | None:
    """Why the device paths cannot run ``model``'s physics, functions, filters or
    optimizer (None when they can): each component says so itself."""
    physics = model.physics
    why = physics.gpu_capability()
    if why is None and physics.fixed_element_matrices() is not None:
        why = "it has a design-independent part C_e (the GPU paths assemble K = sum m K0)"
    if why:
        return f"the physics {physics.name!r} cannot run on the GPU: {why}"
    for fn in model.functions():
        why = function_capability(fn)
        if why:
            return why
    for f in model.filters:
        why = f.gpu_capability()
        if why:
            return why
    if not getattr(model.optimizer, "device_arrays", False):
        return (f"the optimizer {model.optimizer.name!r} works on host arrays; the GPU "
                "paths run optimizers that keep the design on the device")
    return None


def function_capability(fn: Any) -> str | None:
    """None when the device paths evaluate ``fn``: a linear form, or an integrand
    function (``cell_terms``); else why not, naming the innermost function at fault."""
    if (fn.linear_form() is not None or hasattr(fn, "cell_terms")
            or fn.eigen_problem() is not None):  # eigenvalues: LOBPCG on the grid path
        return None
    terms = getattr(fn, "terms", None)
    if terms:  # a sum runs where its terms do; name the term at fault
        return next((why for why in map(function_capability, terms) if why), None)
    return (f"the function {fn.name!r} is neither linear in the states (a linear form) "
            "nor written as an integrand (cell_terms), so it runs on the CPU only")


def component_paths(kind: str, cls: type) -> list[str]:
    """The paths a registered component class runs on, from what it declares (for
    ``femopt plugins``): ``cpu`` always; ``gpu grid`` and ``gpu mesh`` where the device
    paths can take it. A weighted sum runs where its terms do."""
    from femopt.objectives.base import Function

    both = ["cpu", "gpu grid", "gpu mesh"]
    if kind == "physics":
        return cls.paths()
    if kind == "function":
        if getattr(cls, "terms_decide_paths", False):
            return ["cpu", "gpu grid and gpu mesh where its terms run"]
        if cls.eigen_problem is not Function.eigen_problem:
            return ["cpu", "gpu grid"]
        ok = cls.linear_form is not Function.linear_form or hasattr(cls, "cell_terms")
    elif kind == "filter":
        return cls.paths()
    elif kind == "optimizer":
        ok = bool(getattr(cls, "device_arrays", False))
    elif kind == "solver":
        return ["cpu", *getattr(cls, "device_paths", ())]
    else:
        return ["cpu"]
    return both if ok else ["cpu"]


class DevicePath(EvaluationPath):
    """The device design chain of ``model``; subclasses set the states' layout.

    Attributes:
        xp: the array module of the fields.
        u: (n_cases, n_states) the last states (warm starts once solved).
        loads: (n_cases, n_states) the loads, zero on supported dofs.
        cg_iterations: CG iterations of the last evaluation: ``forward`` (one per load
            case) and ``adjoint`` (one per adjoint solve).
    """

    # True: the first solve starts from the zero states themselves, updated in place (the
    # grid path's mixed solve); False: it gets no start, which saves an operator apply
    cold_start_in_place = False

    def __init__(self, model: Any, xp: Any, loads: Any, stages: list[Any] | None = None):
        super().__init__(model, xp, [f.device_twin(xp) for f in model.filters]
                         if stages is None else stages)
        self.loads = loads if hasattr(loads, "dense") else xp.asarray(loads)
        self.weights = np.asarray(model.weights, dtype=np.float64)
        self.u = xp.zeros(self.loads.shape, dtype=xp.float64)
        self.solved = False
        # per function, its parts (weight, form): one for a linear form or an integrand
        # function, one per term of a sum whose terms are not all linear
        self.forms = [self._device_parts(fn) for fn in model.functions()]
        self.cg_iterations: dict[str, list[int]] = {"forward": [], "adjoint": []}
        self._slot, self._slots = 0, {}  # the realization whose states are live, others'

    # -- what a subclass supplies --------------------------------------------------------

    def _to_states(self, a: np.ndarray) -> np.ndarray:
        """A full-dof host vector in the states' layout, zero on supported dofs."""
        raise NotImplementedError

    def _set_operator(self, scale: Any) -> None:
        """The operator of a new design (scale factors of the cells' K0)."""
        raise NotImplementedError

    def _solve(self, rhs: Any, x0: Any) -> tuple[Any, int]:
        """K x = rhs (x0: warm start or None); the solution and its CG iterations."""
        raise NotImplementedError

    def _adjoint_term(self, u: Any, mu: Any, beta: np.ndarray, a: np.ndarray, scale: Any,
                      dm: Any) -> Any:
        """Per cell dm_e sum_c lambda_c,e^T K0_e u_c,e with lambda_c = beta_c u_c +
        sum_g a_cg mu_g (``mu`` None: none), in one pass over cells."""
        raise NotImplementedError

    def _cell_states(self, u: Any, cells: Any) -> Any:
        """(n_cases, len(cells), nd) element states of ``u`` (n_cases, n_states) at the
        cells ``cells`` (device indices)."""
        raise NotImplementedError

    def _from_cells(self, de: Any, cells: Any) -> Any:
        """(n_cases, n_states): per-cell vectors (n_cases, len(cells), nd) summed into the
        states' layout, zero on supported dofs (the transpose of :meth:`_cell_states`)."""
        raise NotImplementedError

    def host_states(self) -> np.ndarray:
        """The last states (n_cases, n_dofs) on the host in femopt's dof numbering."""
        raise NotImplementedError

    def cell_field(self, a: Any) -> RowSource:
        """A per-cell field kept on the device, read by slabs."""
        return cell_rows(a)

    def state_rows(self) -> list[RowSource]:
        """The last states kept on the device, one field per load case, node by node
        ((n_nodes, k), or (n_nodes,) for one dof per node)."""
        raise NotImplementedError

    def _to_cells(self, v: Any) -> Any:
        """A per-cell host array (every cell, femopt's order; or a
        :class:`~femopt.assembly.sparse_vector.SparseVector`) in the path's cell layout;
        a constant view (a grid's volume weights) stays one number at stride 0 there, as
        the design's bounds do (:func:`~femopt.evaluation.device_choice.to_design`)."""
        return to_design(self.xp, dense_of(v))

    def _functional_states(self, a: Any) -> Any:
        """A linear form's functional (a full-dof host array or a
        :class:`~femopt.assembly.sparse_vector.SparseVector`) in the states' layout, zero
        on supported dofs."""
        return self._to_states(dense_of(a))

    def _loads_dot(self, u: Any) -> np.ndarray:
        """(n_cases,) f_c . u_c on the host."""
        return to_host(self.xp.sum(self.loads * u, axis=1))

    def _functionals_dot(self, u: Any, a: Any) -> np.ndarray:
        """(n_cases, n_groups) u_c . a_g on the host."""
        return to_host(u @ a.T)

    def _cell_dot(self, v: Any, rho: Any) -> float:
        if self.xp is not np and v.strides == (0,):
            # a constant v made the array it was, for this product alone: the device's
            # reduction may sum a stride-0 operand in another order (another last bit)
            v = self.xp.ascontiguousarray(v)
        return float(v @ rho)

    # -- functions on the device ---------------------------------------------------------

    def _device_parts(self, fn: Any) -> list[tuple[float, DeviceForm]]:
        """``fn`` as (weight, form) parts: its linear form, or its cell terms, or (a sum
        whose terms are not all linear) the parts of each term."""
        if fn.eigen_problem() is not None:
            return []  # the path's eigensolve (EvaluationPath.modal_terms)
        form = fn.linear_form()
        if form is not None:
            a, s = group_functionals(form, self._functional_states, len(self.weights))
            a = None if a is None else self.xp.asarray(a)
            v = None if form.rho_weights is None else self._to_cells(form.rho_weights)
            return [(1.0, DeviceForm(form.compliance, a, s, v,
                                     None if a is None else self.xp.zeros_like(a)))]
        if hasattr(fn, "cell_terms"):
            return [(1.0, DeviceForm(0.0, None, np.zeros((len(self.weights), 0)), None,
                                     integrand=fn))]
        return [(w * wp, part) for w, term in zip(fn.weights, fn.terms)
                for wp, part in self._device_parts(term)]

    def _integrand_terms(self, form: DeviceForm, rho: Any, u: Any) -> tuple:
        """(value, dJ/du_e of the function's cells, dJ/drho on every cell) from the
        function's ``cell_terms`` on the cells it covers (``fn.cells``, else all); a
        value or partial that is not finite fails the run, naming the function."""
        xp, fn, mesh = self.xp, form.integrand, self.model.mesh
        if form.cells is None:
            cells = getattr(fn, "cells", None)
            form.cells = xp.asarray(np.arange(mesh.n_cells) if cells is None else cells)
            # node coordinates of those cells, on the device once
            sel = np.asarray(to_host(form.cells))
            form.coords = xp.asarray(mesh.cell_coords(sel), dtype=xp.float64)
        with self.model.registry.guard("function", fn.name, "cell_terms()"):
            value, d_ue, d_rho = fn.cell_terms(self._cell_states(u, form.cells),
                                               rho[form.cells], form.coords)
        checked_values(self.model, [value], [fn])
        if not (bool(xp.isfinite(d_ue).all()) and bool(xp.isfinite(d_rho).all())):
            raise RunError(f"the partial derivatives of function '{fn.name}' are not "
                           f"finite at design iteration {len(self.model.history) + 1}")
        full = xp.zeros(rho.shape[0], dtype=xp.float64)
        full[form.cells] = d_rho
        return value, d_ue, full

    def _scatter(self, index: Any, de: Any, size: int) -> Any:
        """(n_cases, size): per-cell vectors summed at their ``index`` (n_cells, nd)."""
        xp = self.xp
        flat = index.ravel()
        return xp.stack([xp.bincount(flat, weights=d.ravel(), minlength=size) for d in de])

    def _parts(self) -> list[DeviceForm]:
        return [form for parts in self.forms for _, form in parts]

    def analyse(self, rho: Any) -> Any:
        """The forward solve: every load case at ``rho`` (warm start from the last
        states; a path that solves in place, ``cold_start_in_place``, starts its first
        solve from the zero states too, with no second state alive); returns the
        interpolation's scale factors (their derivative is made after every solve,
        :meth:`design_terms`)."""
        m = self.model
        scale = m.interp.value(rho)
        self._set_operator(scale)
        its = []
        for c in range(self.u.shape[0] if m.static else 0):
            start = self.solved or self.cold_start_in_place
            self.u[c], it = self._solve(self.loads[c], self.u[c] if start else None)
            its.append(it)
        self.solved = True
        self.cg_iterations = {"forward": its, "adjoint": []}
        return scale

    def solve_adjoints(self, rho: Any) -> None:
        """The adjoint solves of every function with the forward's solver object, to the
        forward's tolerance, warm-started from the last ones: K mu_g = -a_g for each
        functional group of a linear form (compliance needs none), K mu_c = -dJ/du_c for
        each load case of an integrand function (none where dJ/du is zero)."""
        for form in self._parts():
            if form.integrand is not None:
                form.terms = self._integrand_terms(form, rho, self.u)
                form.active = form.needs_state and bool(self.xp.any(form.terms[1]))
                if not form.active:  # no dependence on the states here
                    continue
                rhs = -self._from_cells(form.terms[1], form.cells)
                if form.mu is None:
                    form.mu = self.xp.zeros_like(rhs)
                for c in range(rhs.shape[0]):
                    form.mu[c], it = self._solve(rhs[c], form.mu[c] if form.solved else None)
                    self.cg_iterations["adjoint"].append(it)
                form.solved = True
                continue
            if form.a is None:
                continue
            for g in range(form.a.shape[0]):
                form.mu[g], it = self._solve(-form.a[g], form.mu[g] if form.solved else None)
                self.cg_iterations["adjoint"].append(it)
            form.solved = True

    def _part_terms(self, form: DeviceForm, rho: Any, scale: Any, dm: Any, u: Any,
                    fresh: bool, fu: list[Any]) -> tuple[float, Any, Any]:
        """(value, partial_rho, adjoint term) of one part, a term None where it is zero;
        ``fu`` caches f_c . u_c."""
        n_cases = len(self.weights)
        if form.integrand is not None:
            value, _, pr = (form.terms if fresh and dm is not None
                            else self._integrand_terms(form, rho, u))
            adj = (self._adjoint_term(u, form.mu, np.zeros(n_cases), np.eye(n_cases),
                                      scale, dm)
                   if dm is not None and form.active else None)
            return float(value), pr, adj
        value = 0.0
        if form.compliance != 0.0:
            if not fu:
                fu.append(self._loads_dot(u))
            value += form.compliance * float(self.weights @ fu[0])
        if form.a is not None:
            au = self._functionals_dot(u, form.a)  # (n_cases, n_groups)
            value += float(np.sum(form.s * au))
        if form.rho_weights is not None:
            value += self._cell_dot(form.rho_weights, rho)
        adj = (self._adjoint_term(u, form.mu, -form.compliance * self.weights, form.s, scale,
                                  dm) if form.needs_state and dm is not None else None)
        return value, form.rho_weights, adj

    def function_terms(self, rho: Any, scale: Any, dm: Any, u: Any = None
                       ) -> tuple[list[float], list[tuple[Any, Any]]]:
        """Values and the pairs (partial_rho, adjoint term) of dJ/drho of every function,
        after :meth:`analyse` and :meth:`solve_adjoints` (``dm`` None: values and partial
        terms alone). The adjoint term of all load cases is one pass over cells:
        lambda_c = -c w_c u_c + sum_g s_gc mu_g."""
        fresh = u is None
        u = self.u if u is None else u
        fu: list[Any] = []
        values, terms = [], []
        # a zero term as one number at stride 0 (no array of the cells' size)
        zero = self.xp.broadcast_to(self.xp.zeros(1, dtype=self.xp.float64), rho.shape)
        for parts in self.forms:
            value, pr, adj = 0.0, None, None  # None: zero
            for w, form in parts:
                v, p, a = self._part_terms(form, rho, scale, dm, u, fresh, fu)
                value, pr, adj = value + w * v, add_term(pr, w, p), add_term(adj, w, a)
                del p, a  # a part's own terms are not alive beside the next part's
            values.append(value)
            terms.append((zero if pr is None else pr, zero if adj is None else adj))
        return values, terms

    def design_terms(self, rho: Any, keep_state: bool = False
                     ) -> tuple[list[float], list[tuple[Any, Any]], State | None]:
        scale = self.analyse(rho)
        self.solve_adjoints(rho)
        dm = self.model.interp.derivative(rho)  # after every solve: not beside their vectors
        values, terms = self.function_terms(rho, scale, dm)
        for k, (value, grad) in self.modal_terms(rho).items():  # plus a sum's other terms
            pr, adj = terms[k]
            values[k] += value
            terms[k] = (pr + self.xp.zeros_like(grad), adj + grad)
        values = checked_values(self.model, values)
        check_terms(self.model, values, terms, self._all_finite)
        state = (State(rho, self.u.copy(), self.loads, self.weights, self.model)
                 if keep_state else None)
        return values, terms, state

    def design_values(self, rho: Any, state: State) -> list[float]:
        return self.held_modal_values(self.function_terms(rho, None, None, u=state.u)[0])

    def design_final(self, rho: Any, lazy: bool = False
                     ) -> tuple[list[float], np.ndarray, State]:
        """The forward solve and the values (no adjoints); fields copied to the host, or
        with ``lazy`` kept on the device as :class:`~femopt.backend.rows.RowSource`
        fields (the densities, each load case's states node by node: :meth:`state_rows`)
        that the results' writers read by slabs."""
        m = self.model
        self.analyse(rho)
        values = self.function_terms(rho, None, None, u=self.u)[0]
        for k, (value, _) in self.modal_terms(rho, gradient=False).items():
            values[k] += value
        if lazy:  # the loads as the path keeps them: no dense host vectors made for this
            rho = cell_rows(rho)
            return values, rho, State(rho, self.state_rows(), self.loads, m.weights, m)
        rho = to_host(rho)
        return values, rho, State(rho, self.host_states(), m.loads, m.weights, m)

    def use_slot(self, k: int) -> None:
        """Keep the states and adjoint solutions of each realization apart, so that each
        warm-starts from its own last solves (a robust problem holds three sets)."""
        if k == self._slot:
            return
        forms = self._parts()
        self._slots[self._slot] = (self.u, self.solved,
                                   [(f.mu, f.solved) for f in forms])
        if k in self._slots:
            self.u, self.solved, kept = self._slots.pop(k)
            for f, (mu, solved) in zip(forms, kept):
                f.mu, f.solved = mu, solved
        else:  # a realization's first solves: fresh arrays, cold starts
            self.u, self.solved = self.xp.zeros_like(self.u), False
            for f in forms:
                f.mu = None if f.mu is None else self.xp.zeros_like(f.mu)
                f.solved = False
        self._slot = k

    def cheap_constraints(self, x: Any) -> np.ndarray:
        """Every bound is rho-only here: its device parts' density weights and cell
        terms, on the device's densities (no solve, no copy to the host)."""
        rho, _ = self.physical(x)
        values = []
        for bound, parts in zip(self.model.bounds, self.forms[1:]):
            value = 0.0
            for w, form in parts:
                if form.integrand is not None:
                    value += w * float(self._integrand_terms(form, rho, self.u)[0])
                elif form.rho_weights is not None:
                    value += w * self._cell_dot(form.rho_weights, rho)
            values.append(bound.normalized(value))
        return np.array(values)

    def _bound_rho_weights(self) -> Any | None:
        """The one bound's density weights from its device part (already in the path's
        cell layout: a rank's slab on a distributed path), when it is one linear form of
        the densities alone (a volume, or a sum of volumes); else None."""
        parts = self.forms[1] if len(self.forms) == 2 else []
        if self.model.bounds[0].function.needs_state or len(parts) != 1:
            return None  # (an eigenvalue term has no part: the sum is not linear)
        w, form = parts[0]
        if form.needs_state or form.rho_weights is None:
            return None
        return form.rho_weights if w == 1.0 else w * form.rho_weights


def add_term(total: Any, w: float, t: Any) -> Any:
    """``total + w * t``, bit for bit as from arrays of zeros (None: zero, for either),
    without an array for a zero sum and adding into ``total``, this sum's own array."""
    if t is None:  # + w * 0: -0.0 becomes 0.0 where w * 0 is 0.0, as from an array
        if total is not None:
            total += w * 0.0
        return total
    if total is None:  # 0 + w t, in float64 as on zeros of float64 (a float32 part too)
        out = t * w
        if out.dtype != np.float64:
            out = out.astype(np.float64)
        out += 0.0
        return out
    total += w * t
    return total
