#!/usr/bin/env bash
# Install femopt as it was at git revision REV into .baseline/site (git-ignored), to carry to
# the GPU machine beside .device-wheels: scripts/gpu-check.sh then runs the command-line
# benchmark through it before the current tree, for a side-by-side figure on one machine.
#   scripts/make-baseline.sh 0255be4
set -euo pipefail
rev=${1:?usage: scripts/make-baseline.sh REV}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git archive "$rev" | tar -x -C "$tmp"
rm -rf .baseline/site
python3 -m pip install -q --no-deps --no-build-isolation --target .baseline/site "$tmp"
python3 -c "import sys; sys.path.insert(0, '.baseline/site'); import femopt; print('baseline femopt', '$rev', 'in', femopt.__file__)"
