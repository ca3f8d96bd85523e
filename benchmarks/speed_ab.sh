#!/bin/bash
# Before/after training speed, alternated: BEFORE_TREE (a worktree of the older commit) vs this tree,
# three rounds of benchmarks/speed.py (convSSM default epoch, ensemble E = 1 and 8), one thread.
#   git worktree add /tmp/before 09bd96c && benchmarks/speed_ab.sh /tmp/before
set -euo pipefail
before=${1:?usage: benchmarks/speed_ab.sh BEFORE_TREE}
after=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$after/.venv/bin/python}
for round in 1 2 3; do
  for side in before after; do
    root=$([ $side = before ] && echo "$before" || echo "$after")
    echo "=== round $round $side (load $(cut -d' ' -f1-3 /proc/loadavg))"
    PYTHONPATH=$root NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 "$py" "$root/benchmarks/speed.py" --threads 1 --configs convssm \
      --ensemble-configs convssm --epochs 5 --baseline-epochs 1 --ensemble 1 8 --ensemble-epochs 3
  done
done
