#!/usr/bin/env bash
# The whole GPU check on an offline GPU machine (../shared/device/README.md), in one go:
# install the carried wheels (.device-wheels/, made by ../shared/device/wheels.sh) and
# femopt, run the GPU tests and the GPU benchmarks, and write logs and tables to $OUT
# (default: ./gpu-check-out). Run from the project root:  bash scripts/gpu-check.sh
# Stages are time-boxed so that one hang cannot eat the machine's lease; the exit status
# is the GPU tests'. BENCH=0 skips the kernel-resource report and the GPU benchmarks
# (the tests alone); TESTS=0 skips the tests (the benchmarks alone); PYTEST_ARGS adds
# pytest arguments (e.g. "-rP" to show the tests' prints, or "tests/test_device.py");
# OPERATOR_ARGS, ITERATION_ARGS, ADJOINT_ARGS, CLI_ARGS, TET4_ARGS and BRACKET_ARGS pass
# arguments to the benchmarks. With .baseline/site carried (scripts/make-baseline.sh REV),
# the command-line benchmark runs through that older femopt first, for a side-by-side figure.
# Measured on an H100 (2026-12-05): 219 GPU tests, all but the slowest two within 215 s
# with 12 workers (TEST_WORKERS, default 8). Earlier (2026-11-25, one worker): the 165 GPU
# tests took about 470 s, the benchmarks
# about 500 s (operator 100, iteration 150, adjoint 60, command line 90, tet4 60, bracket
# 40). Where one command may run 10 minutes at most, run it twice: BENCH=0, then TESTS=0.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# the GPU image's mpiexec may be Open MPI's, which refuses to start as root (the lent
# machine runs everything as root) unless told it may
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
LIMIT_TESTS=${LIMIT_TESTS:-570}  # about 470 s on an H100 (2026-11-25)
LIMIT_OPERATOR=${LIMIT_OPERATOR:-120}
LIMIT_ITERATION=${LIMIT_ITERATION:-120}  # the side-by-side solves
LIMIT_ADJOINT=${LIMIT_ADJOINT:-240}
LIMIT_CLI=${LIMIT_CLI:-240}
LIMIT_TET4=${LIMIT_TET4:-90}        # tet4 assembly at ~100k and ~1M tets
LIMIT_BRACKET=${LIMIT_BRACKET:-60}  # the bracket's design iterations on the GPU path (~100k;
                                    # ~1M: BRACKET_ARGS="--sizes 1M" LIMIT_BRACKET=300)

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c 'import cupy, numpy, scipy; print("cupy", cupy.__version__, "numpy", numpy.__version__, "scipy", scipy.__version__, "CUDA runtime", cupy.cuda.runtime.runtimeGetVersion())'
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

if [ -d .device-wheels ]; then
  names=$(ls .device-wheels/*.whl | sed -E 's#.*/([^-]+)-.*#\1#' | sort -u | tr '\n' ' ')
  python3 -m pip install -q --no-index --find-links .device-wheels $names 2>&1 | tail -3
fi
# an older femopt carried in .baseline/site (scripts/make-baseline.sh REV): the command-line
# benchmark through it first, before this tree is installed, for a side-by-side figure
if [ "${BENCH:-1}" != 0 ] && [ -d .baseline/site/femopt ]; then
  PYTHONPATH=$PWD/.baseline/site timeout "$LIMIT_CLI" python3 benchmarks/gpu_cli_run.py \
    ${CLI_ARGS:-} 2>&1 | tee "$OUT/gpu_cli_run_baseline.md"
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -3

# register use, spills and instruction counts of the apply kernels (nvcc, like NVRTC): the
# whole kernel, and its main loop (the longest backward branch: one node layer of columns
# counts twice, it steps two; one cell layer of walsh)
[ "${BENCH:-1}" = 0 ] || python3 - > "$OUT/kernel_resources.txt" 2>&1 <<'PY'
import re, subprocess, tempfile, pathlib
from femopt.backend.kernels import PREAMBLE
from femopt.assembly import matrix_free as mf
from femopt.assembly.k0_literals import k0_prelude
from femopt.assembly.walsh import walsh_factor, walsh_prelude
import sys; sys.path.insert(0, "tests")
from grid_cantilever import unit_cell_matrix
k0 = unit_cell_matrix(3)
d = pathlib.Path(tempfile.mkdtemp())
jobs = {"gather": (PREAMBLE + pathlib.Path("femopt/assembly/matrix_free.cu").read_text(),
                   ["femopt_assembly_hex8_apply<double, 3, 1>",
                    "femopt_assembly_hex8_apply<float, 3, 1>",
                    "femopt_assembly_hex8_apply<float, 3, 8>"]),
        "columns": (PREAMBLE + k0_prelude(k0)
                    + pathlib.Path("femopt/assembly/matrix_free_columns.cu").read_text(),
                    [f"femopt_assembly_hex8_apply_columns<{r}, 3, {mf.COLUMN_MIN_BLOCKS[r]}>"
                     for r in ("double", "float")]),
        "walsh": (PREAMBLE + walsh_prelude(walsh_factor(k0, 3))
                  + pathlib.Path("femopt/assembly/matrix_free_walsh.cu").read_text(),
                  [f"femopt_assembly_hex8_apply_walsh<{r}, 3, {mf.WALSH_ROWS}, "
                   f"{mf.WALSH_MIN_BLOCKS[r]}>" for r in ("double", "float")]),
        "csr_gather": (PREAMBLE + pathlib.Path("femopt/assembly/csr_gather.cu").read_text(),
                       ["femopt_assembly_csr_gather<double>", "femopt_assembly_csr_gather<float>",
                        "femopt_assembly_csr_scatter_cells<double>"])}
OPS = ("FFMA", "FADD", "FMUL", "DFMA", "DADD", "DMUL", "LDG", "STG", "LDS", "STS", "SHFL",
       "BAR", "LDC", "MOV", "IMAD", "IADD3")

def counts(lines):
    ops = [re.sub(r"^@!?U?P\w+\s+", "", t).split()[0].split(".")[0] for _, t in lines]
    return f"{len(ops)} instructions: " + ", ".join(f"{o} {ops.count(o)}" for o in OPS
                                                     if ops.count(o))

for tag, (src, names) in jobs.items():
    code = src + "\n" + "\n".join(f"auto* k{i} = &{n};" for i, n in enumerate(names))
    (d / f"{tag}.cu").write_text(code)
    r = subprocess.run(["nvcc", "-arch=sm_90", "-std=c++17", "-cubin", "-Xptxas", "-v",
                        str(d / f"{tag}.cu"), "-o", str(d / f"{tag}.cubin")],
                       capture_output=True, text=True)
    print("\n".join(l for l in (r.stdout + r.stderr).splitlines()
                    if "registers" in l or "spill" in l or "entry" in l or "error" in l))
    s = subprocess.run(["cuobjdump", "-sass", str(d / f"{tag}.cubin")],
                       capture_output=True, text=True).stdout
    for fn in re.split(r"\n\s+Function : ", s)[1:]:
        lines = [(int(m.group(1), 16), m.group(2)) for m in
                 re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", fn)]
        print(fn.splitlines()[0])
        print("  kernel:", counts(lines), "| c[0x2]", fn.count("c[0x2]"), "c[0x3]",
              fn.count("c[0x3]"))
        back = [(a, int(m.group(1), 16)) for a, t in lines
                if (m := re.search(r"BRA\s+(0x[0-9a-f]+)", t)) and int(m.group(1), 16) < a]
        if back:
            end, start = max(back, key=lambda b: b[0] - b[1])
            print("  main loop:", counts([x for x in lines if start <= x[0] <= end]))
PY

set +e
tests_rc=0
if [ "${TESTS:-1}" != 0 ]; then
  timeout "$LIMIT_TESTS" python3 -m pytest -m gpu -n "${TEST_WORKERS:-8}" -p no:cacheprovider -q -rs \
    -o addopts="" ${PYTEST_ARGS:-} \
    2>&1 | tee "$OUT/pytest_gpu.log"
  tests_rc=${PIPESTATUS[0]}
fi
if [ "${BENCH:-1}" != 0 ]; then
  timeout "$LIMIT_OPERATOR" python3 benchmarks/gpu_operator.py ${OPERATOR_ARGS:-} 2>&1 | tee "$OUT/gpu_operator.md"
  timeout "$LIMIT_ITERATION" python3 benchmarks/gpu_solvers.py ${ITERATION_ARGS:-} 2>&1 \
    | tee "$OUT/gpu_solvers.md"
  timeout "$LIMIT_ADJOINT" python3 benchmarks/gpu_adjoint_cost.py ${ADJOINT_ARGS:-} 2>&1 \
    | tee "$OUT/gpu_adjoint_cost.md"
  # the command line itself at production sizes (set-up, iterations, output)
  timeout "$LIMIT_CLI" python3 benchmarks/gpu_cli_run.py ${CLI_ARGS:-} 2>&1 \
    | tee "$OUT/gpu_cli_run.md"
  # meshes from files: the tet4 bracket at ~100k and ~1M tets (unpacked from the carried
  # .bench-meshes/, made here by `python3 benchmarks/bracket_meshes.py 100k,1M`: the image
  # has no gmsh); most of these seconds are host set-up (element matrices and pattern, about
  # 90 s at 1M tets on one core), the GPU work itself takes milliseconds
  timeout "$LIMIT_TET4" python3 benchmarks/tet4_assembly.py --devices gpu ${TET4_ARGS:-} \
    2>&1 | tee "$OUT/tet4_assembly.md"
  timeout "$LIMIT_BRACKET" python3 benchmarks/bracket_iteration.py --cases gpu \
    ${BRACKET_ARGS:---sizes 100k --iterations 6 --budget 10} 2>&1 | tee "$OUT/bracket_iteration.md"
  # where the grid path's GPU memory goes, and ranks sharing the GPU (needs mpiexec: the
  # mpich wheel in .device-wheels, ../shared/device/wheels.sh mpich)
  timeout "${LIMIT_MEMTRACE:-90}" python3 benchmarks/gpu_memory_trace.py ${MEMTRACE_ARGS:-} \
    2>&1 | tee "$OUT/gpu_memory_trace.md"
  timeout "${LIMIT_MPI:-120}" python3 benchmarks/mpi_cpu.py --device gpu \
    ${MPI_ARGS:---shape 256x128x128 --iterations 5 --ranks 0,1,2} 2>&1 | tee "$OUT/mpi_gpu.md"
fi
# optional: stall reasons of the apply kernels (NCU=1), and the CPU multigrid benchmark
# pinned to two cores like the CI machine (CPU_BENCH=1)
if [ "${NCU:-0}" = 1 ]; then
  timeout "${LIMIT_NCU:-120}" ncu --clock-control none --section SpeedOfLight \
    --section Occupancy --section WarpStateStats --section ComputeWorkloadAnalysis \
    -k regex:femopt_assembly_hex8 -c 4 \
    python3 benchmarks/gpu_operator.py --sizes 10M --variants walsh,columns --repeat 1 \
    > "$OUT/ncu_apply.txt" 2>&1
  tail -60 "$OUT/ncu_apply.txt"
fi
if [ "${CPU_BENCH:-0}" = 1 ]; then
  OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 timeout "${LIMIT_CPU:-200}" taskset -c 0,1 \
    python3 benchmarks/cpu_multigrid.py 2>&1 | tee "$OUT/cpu_multigrid.md"
fi
echo "GPU tests exit status: $tests_rc"
exit "$tests_rc"
