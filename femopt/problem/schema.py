"""The schema of a problem file (core sections).

Sections whose ``type:`` picks a plugin (``mesh``, ``physics``, ``objective``,
``constraints[]``, ``filters[]``, ``optimizer``, ``solver``) are kept as mappings here and
validated against the chosen plugin's own ``Options`` by :mod:`femopt.problem.load`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator,
                      model_validator)

from femopt.mesh.regions import Region


class Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, frozen=True,
        strict=True,
    )


class Support(Strict):
    """Fixed (zero) degrees of freedom on a region."""

    region: Region
    """Where the support acts."""
    dofs: list[str] | None = Field(None, min_length=1)
    """Which components are fixed (e.g. [x], [x, y]); all of them when omitted."""


class Load(Strict):
    """A load on a region: nodal values (`force`, `heat`), a source per unit volume on
    cells (`body: true`), or a load per unit area on the region's boundary facets
    (`traction`, `pressure`, `heat_flux`), integrated over the facets."""

    region: Region | None = None
    """Where the load acts (a body load without a region covers the whole domain)."""
    force: list[float] | None = None
    """Force vector (elasticity): per node, a total (`distribute`), or per unit volume
    (`body`)."""
    heat: float | None = None
    """Heat input (heat conduction): per node, a total (`distribute`), or per unit volume
    (`body`)."""
    traction: list[float] | None = None
    """Force per unit area on the region's boundary facets (elasticity), one component per
    dof, in force / length^2 of the mesh's unit (2D: times the physics' thickness)."""
    pressure: float | None = None
    """Force per unit area normal to the region's boundary facets (elasticity): positive
    pushes into the body (along the inward normal), negative pulls (suction)."""
    heat_flux: float | None = None
    """Heat per unit area and time entering the body through the region's boundary facets
    (heat conduction; negative leaves it)."""
    body: bool = False
    """A source per unit volume on the region's cells instead of nodal values."""
    distribute: Literal["per_node", "total", "area"] = "per_node"
    """How `force` or `heat` on a region is applied: per_node, the value on every selected
    node; total, the value is a total split evenly over the selected nodes (the same share
    per node whatever the mesh); area, the value is a total spread over the region's
    boundary facets by area (a uniform traction or heat flux of value / area)."""

    @model_validator(mode="after")
    def _one_value(self) -> Load:
        given = [k for k in ("force", "heat", "traction", "pressure", "heat_flux")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a load needs exactly one of 'force', 'heat', 'traction', "
                             f"'pressure' or 'heat_flux' (got {len(given) or 'none'})")
        if given[0] in SURFACE_KEYS:
            if self.body:
                raise ValueError(f"'{given[0]}' acts on boundary facets; a body load "
                                 "takes 'force' or 'heat' per unit volume")
            if "distribute" in self.model_fields_set:
                raise ValueError(f"'{given[0]}' is per unit area already; 'distribute' "
                                 "applies to 'force' and 'heat'")
            if self.region is None:
                raise ValueError(f"'{given[0]}' needs a 'region' of boundary facets")
        if self.body and self.distribute == "area":
            raise ValueError("'distribute: area' spreads a total over boundary facets; a "
                             "body load is per unit volume")
        if self.region is None and not self.body:
            raise ValueError("a nodal load needs a 'region'")
        return self

    @property
    def surface(self) -> bool:
        """Whether the load acts on the region's boundary facets."""
        return self.distribute == "area" or any(
            getattr(self, k) is not None for k in SURFACE_KEYS)


# loads per unit area on boundary facets
SURFACE_KEYS = ("traction", "pressure", "heat_flux")


class Spring(Strict):
    """Springs to ground on the dofs of a region: stiffness added to the diagonal of K
    (e.g. the input and output springs of a compliant mechanism)."""

    region: Region
    """Where the springs act."""
    stiffness: float = Field(gt=0)
    """Spring stiffness (force per unit displacement, or heat flow per degree)."""
    dofs: list[str] | None = Field(None, min_length=1)
    """Which components get a spring (e.g. [x]); all of them when omitted."""
    distribute: Literal["per_node", "total"] = "per_node"
    """Every selected node gets the stiffness, or the total is shared evenly."""


class LoadCase(Strict):
    name: str | None = None
    """Label used in logs and results."""
    weight: float = Field(1.0, gt=0)
    """Weight of this case in a summed objective such as compliance."""
    loads: list[Load] = Field(min_length=1)
    """The loads of this case."""


class Interpolation(Strict):
    type: Literal["simp", "ramp"] = "simp"
    """Material interpolation: SIMP (rho^p) or RAMP (rho / (1 + q (1 - rho)))."""
    penalty: float = Field(3.0, ge=0)
    """SIMP exponent p, or RAMP parameter q."""
    min: float = Field(1e-9, gt=0, lt=1)
    """Ratio of void to solid material property (Emin/E0)."""


class Passive(Strict):
    region: Region
    """Cells whose centroid lies in the region (face: cells touching the face)."""
    value: Literal["solid", "void"]
    """Density held at 1 (solid) or 0 (void)."""


class Robust(Strict):
    """The robust formulation (Sigmund 2009; Wang, Lazarov and Sigmund 2011): the filtered
    design is projected at three thresholds, eta_eroded > eta (the projection filter's
    own, the intermediate design) > eta_dilated, and the optimizer minimizes the worst
    of the objective's three values. The intermediate design then has a minimum size of
    solid and of void set by the filter radius and the thresholds (femopt prints it).
    Needs a projection filter (heaviside) after a density filter, and MMA."""

    eta_eroded: float = Field(0.75, gt=0, lt=1)
    """Threshold of the eroded design (above the projection's eta)."""
    eta_dilated: float = Field(0.25, gt=0, lt=1)
    """Threshold of the dilated design (below the projection's eta)."""
    volume_on: Literal["dilated", "intermediate"] = "dilated"
    """The design a volume constraint bounds: the dilated one, its limit rescaled every
    `volume_every` iterations so that the intermediate design has the volume asked for
    (Wang et al. 2011), or the intermediate one itself. Other constraints bound the
    intermediate design."""
    volume_every: int = Field(20, gt=0)
    """Iterations between updates of the dilated design's volume limit."""

    @model_validator(mode="after")
    def _order(self):
        if not self.eta_dilated < self.eta_eroded:
            raise ValueError(f"the thresholds must satisfy eta_dilated < eta_eroded, got "
                             f"eta_dilated {self.eta_dilated:g} and eta_eroded "
                             f"{self.eta_eroded:g}")
        return self


class Design(Strict):
    """A density design (topology optimization): one density per cell."""

    type: Literal["density"] = "density"
    """density (the default), or shape: the node positions of a moving boundary (see
    `design` (type: shape))."""
    initial: float | None = Field(None, gt=0, le=1)
    """Initial uniform density (default: the volume constraint's limit, else 0.5)."""
    interpolation: Interpolation = Interpolation()
    """Material interpolation."""
    passive: list[Passive] = []
    """Regions held solid or void."""
    robust: Robust | None = None
    """The robust formulation: a minimum size of solid and void (see `design.robust`)."""


class Slide(Strict):
    """Mesh nodes that slide on a plane (a symmetry plane): their coordinate along the
    plane's normal stays as it is, the other coordinates follow the mesh motion."""

    region: Region
    """The nodes that slide (e.g. `{group: bottom}` or `{face: y_min}`)."""
    normal: Literal["x", "y", "z"]
    """The plane's normal axis: the coordinate held."""


class Extension(Strict):
    """How the shape gradient on the moving boundary becomes a motion of every node: one
    solve of a(V, W) = int k_e grad V : C : grad W + V . W / length^2 on the mesh."""

    type: Literal["elasticity", "laplace"] = "elasticity"
    """The operator: linear elasticity (C of Poisson's ratio `nu`) or a Laplace equation
    per coordinate."""
    data: Literal["neumann", "dirichlet"] = "neumann"
    """neumann: the boundary gradient is the load of the solve (smoothed along the
    boundary); dirichlet: it is the boundary motion itself (divided by each node's share
    of the boundary), extended into the volume."""
    length: float | None = Field(None, gt=0)
    """Length scale of the mass term (a regularisation: shorter keeps the motion closer
    to the boundary); none when omitted, which needs some held boundary."""
    nu: float = Field(0.3, gt=-1.0, lt=0.5)
    """Poisson's ratio of the elasticity operator."""
    normal: bool = True
    """Keep only the normal component of the boundary gradient (the tangential one slides
    nodes along the boundary without changing the shape to first order)."""
    stiffening: float = Field(1.0, ge=0)
    """Cell stiffness (mean cell volume / cell volume)^stiffening: small cells near the
    boundary move nearly rigidly instead of being crushed (0: uniform)."""


class ShapeDesign(Strict):
    """A shape design: the positions of the nodes of a moving boundary. The rest of the
    mesh follows through the extension; boundary nodes elsewhere are held (or slide).
    Every cell is solid; needs a mesh read from a file."""

    type: Literal["shape"]
    """shape."""
    boundary: Region
    """The moving boundary's nodes (e.g. `{group: hole}`); they must lie on the mesh's
    boundary."""
    slide: list[Slide] = []
    """Nodes that slide on symmetry planes (including moving nodes there)."""
    extension: Extension = Extension()
    """The extension of the boundary gradient into the mesh."""
    max_step: float | None = Field(None, gt=0)
    """Largest node motion of one step, in the mesh's length unit (default: the mean edge
    length of the moving boundary)."""
    min_quality: float = Field(0.2, gt=0, lt=1)
    """Smallest scaled Jacobian a step may leave in a cell (1: ideal cell, <= 0:
    inverted); a cell already below it may not get worse. Steps that break it are
    halved."""
    backtracks: int = Field(10, ge=1)
    """Halvings of a rejected step before the run stops."""
    max_iter: int = Field(200, ge=1)
    """Iteration limit (`--max-iter` overrides it)."""
    tol: float = Field(1e-5, gt=0)
    """Converged when an accepted step changes the objective by less than this (relative)
    and the constraints hold."""
    constraint_tol: float = Field(1e-3, gt=0)
    """How far (relative to its bound) a constraint may be off when converged."""


def _design_type(value: Any) -> str:
    if isinstance(value, dict):
        t = value.get("type", "density")
        return t if isinstance(t, str) else repr(t)
    return getattr(value, "type", "density")


DESIGN_TYPES = ("density", "shape")
AnyDesign = Annotated[Union[Annotated[Design, Tag("density")],
                            Annotated[ShapeDesign, Tag("shape")]], Discriminator(_design_type)]


Unit = Literal["um", "mm", "cm", "m", "in", "ft"]


class Output(Strict):
    dir: str | None = None
    """Results directory (default: results/<problem name>); `--out` overrides it. A
    relative path is relative to the working directory, like the default and `--out`."""
    formats: list[str] = ["vtu"]
    """Exporters run on the final design, written as design.<suffix> (built-in: vtu, vti
    (structured grids), stl, 3mf, obj, ply (3D, or 2D extruded), dxf, svg (2D))."""
    picture: bool = True
    """Write convergence.png and design.png."""
    threshold: float = Field(0.5, gt=0, lt=1)
    """Density above which a cell counts as solid: the 3D picture and the exported parts."""
    smooth: int = Field(10, ge=0)
    """Taubin smoothing iterations of exported surfaces and outlines (0: none)."""
    thickness: float | None = Field(None, gt=0)
    """Thickness of the extruded STL/3MF/OBJ/PLY of a 2D design (default: the physics'
    thickness)."""
    series_every: int = Field(10, ge=0)
    """Add the design to the ParaView time series (series.xdmf + series.h5) every this
    many iterations (0: no series)."""
    checkpoint_every: int = Field(10, ge=0)
    """Write checkpoint.h5 every this many iterations (0: never); `femopt resume`
    continues from it."""


class Problem(Strict):
    """A topology or shape optimization problem."""

    name: str | None = None
    """Name of the problem (default: the file name); also the default results directory
    `results/<name>`, so one path component: no `/` or `\\`, not `.` or `..`."""
    description: str | None = None
    """Free text."""
    unit: Unit = "mm"
    """Length unit of the mesh's coordinates: um, mm, cm, m, in or ft. femopt is
    unit-consistent (it converts nothing): give lengths, moduli, loads and limits in one
    consistent system, e.g. mm, N and MPa. The unit is written into exported parts (3MF,
    DXF, SVG), summary.json and the result files' field data."""
    mesh: dict[str, Any]
    """Mesh source: `type` picks the plugin (built-in: structured, file)."""
    physics: dict[str, Any]
    """Physics: `type` picks the plugin (built-in: linear_elasticity, heat_conduction,
    convection_diffusion)."""
    supports: list[Support] = Field(min_length=1)
    """Fixed degrees of freedom."""
    springs: list[Spring] = []
    """Springs to ground (stiffness added to the system at the dofs of a region)."""
    loads: list[Load] | None = None
    """Loads of a problem with one load case (use `load_cases` for several); a problem
    whose functions read no static state (eigenfrequencies, volume) may have none."""
    load_cases: list[LoadCase] | None = None
    """Several load cases sharing one factorization."""
    design: AnyDesign = Design()
    """Design variables: densities (initial value, interpolation, passive regions), or
    with `type: shape` the nodes of a moving boundary."""
    filters: list[dict[str, Any]] = []
    """Filter chain applied to the design in order (sensitivity, density, heaviside)."""
    objective: dict[str, Any]
    """Objective function to minimize (or with `maximize: true` to maximize, e.g. an
    eigenfrequency): `type` picks the plugin."""
    constraints: list[dict[str, Any]] = []
    """Constraints: `type` plus `max`, `min` or (shape designs) `equal`."""
    optimizer: dict[str, Any] = {"type": "oc"}
    """Optimizer: `type` picks the plugin (oc, mma, nlopt)."""
    solver: dict[str, Any] = {"type": "direct"}
    """Linear solver: `type` picks the plugin (direct, pcg, multigrid, amg). Left out,
    femopt picks the fastest measured for the problem and names it in the run's log:
    multigrid on structured grids above a few thousand free dofs, AMG on 3D meshes from
    files above 3,000 (25,000 with the `cholmod` extra), else direct (CHOLMOD with the
    `cholmod` extra, else SuperLU)."""
    output: Output = Output()
    """Where and what to write."""
    device: Literal["auto", "cpu", "gpu"] = "auto"
    """Where the design iterations run: gpu (CuPy; structured grids; compliance,
    displacement, mechanism, mean temperature, volume and their weighted sums,
    eigenfrequency), cpu, or
    auto (the GPU when CuPy sees one and the problem fits
    the GPU path, else the CPU); `--device` overrides it."""

    @field_validator("name")
    @classmethod
    def _one_path_component(cls, v: str | None) -> str | None:
        if v is not None:
            why = unsafe_name(v)
            if why:
                raise ValueError(f"the name is used as a directory name: {why}")
        return v

    @model_validator(mode="after")
    def _one_way_to_load(self) -> Problem:
        if self.loads is not None and self.load_cases is not None:
            raise ValueError("give exactly one of 'loads' or 'load_cases'")
        if self.load_cases is not None and not self.load_cases:
            raise ValueError("'load_cases' needs at least one case")
        return self


MAX_NAME = 100  # characters of a problem's name


def unsafe_name(name: str) -> str | None:
    """Why ``name`` is not one safe path component (None when it is)."""
    if not name.strip():
        return "it is empty"
    if len(name) > MAX_NAME:
        return f"it has {len(name)} characters (at most {MAX_NAME})"
    if name in (".", ".."):
        return f"{name!r} names a directory above or at the results directory"
    bad = sorted({c for c in name if c in "/\\:" or ord(c) < 32 or ord(c) == 127})
    if bad:
        return f"it holds {', '.join(repr(c) for c in bad)} (one path component needed)"
    if name != name.strip():
        return "it starts or ends with white space"
    return None


# Keys every constraint entry has, whatever its type; the rest belongs to the plugin.
CONSTRAINT_KEYS = {"type", "max", "min", "equal"}
# Keys the objective has, whatever its type: `maximize: true` maximizes the function.
OBJECTIVE_KEYS = {"type", "maximize"}
