#!/usr/bin/env bash
# one GPU call: install, GPU tests, then the benchmarks; each stage time-boxed
set -u
export PYTHONUNBUFFERED=1
W=$(ls .device-wheels/*.whl | sed -E 's#.*/([^-]+)-.*#\1#' | sort -u)
python3 -m pip install -q --no-index --find-links .device-wheels $W 2>&1 | tail -2
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total --format=csv > $OUT/env.txt
date -u >> $OUT/env.txt
timeout ${T_TESTS:-220} python3 -m pytest -m gpu -n 6 -p no:cacheprovider -q -rs --maxfail=30 -o addopts="" ${TESTS_ARGS:-} > $OUT/pytest_gpu.log 2>&1
echo "tests rc $?" >> $OUT/env.txt
timeout 130 python3 benchmarks/bracket_iteration.py --sizes 100k,1M --cases gpu-amg,gpu --iterations 4 --budget 40 --setup device > $OUT/bracket.md 2>&1
timeout 60 python3 benchmarks/gpu_cli_run.py --sizes 512x256x256 --iterations 5 --solver-section none > $OUT/cli_defaults.md 2>&1
timeout 60 python3 benchmarks/gpu_cli_run.py --sizes 512x256x256 --iterations 30 --rtol 1e-6 --precision mixed > $OUT/cli_mixed.md 2>&1
timeout 60 python3 benchmarks/gpu_cli_run.py --sizes 512x256x256 --iterations 30 --rtol 1e-6 --precision double > $OUT/cli_double.md 2>&1
tail -4 $OUT/pytest_gpu.log; cat $OUT/env.txt
