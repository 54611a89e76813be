#!/usr/bin/env bash
# Everything this project measures on a GPU, in one call (a lent GPU machine gives one short try):
#   1. the CUDA-only tests (graph replay == eager execution),
#   2. benchmarks/gpu_probe.py: graphed engine vs eager on this GPU, fused vs loop forward, profile,
#   3. the CUDA benchmark (engine vs plain-PyTorch baselines) -> cuda.json + cuda-ratios.md,
#   4. the quick sweep on CUDA, one run at a time (runs sharing a GPU would share its clock),
#      until the time budget ends; complete runs only, packed as sweep.tgz.
# Usage, from the repository root on the GPU machine:
#   OUT=/dir COMMIT=<git sha> [BUDGET_S=480] [ROUNDS=5] [FORWARDS="loop fused"] [PYTHON=python3] \
#     benchmarks/gpu_session.sh
# Works without installing the package (PYTHONPATH=src) and without .git (COMMIT names the code).
# Nothing under results/ is read: where a copy of the tree must stay small (a lent machine takes
# 64 MiB), send it without results/ and commit what comes back from $OUT under results/.
set -uo pipefail
OUT=${OUT:?set OUT to the folder for the results}
PY=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-480}
START=$(date +%s)
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TBPTT_BENCH_GIT_COMMIT=${COMMIT:-}
LOG=$OUT/log.txt
say() { echo "== [$(( $(date +%s) - START )) s] $*" | tee -a "$LOG"; }

say "environment"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name())"
  echo "commit ${COMMIT:-unknown}"; } 2>&1 | tee -a "$LOG"

say "CUDA tests"
$PY -m pytest tests/test_graphed_elman.py -q -p no:cacheprovider -W default 2>&1 | tail -4 | tee -a "$LOG"

say "probe: graphed engine vs eager, and its forward (one process per variant)"
REPORTS=()
for f in ${FORWARDS:-loop fused}; do
  $PY benchmarks/gpu_probe.py --forward $f --out "$OUT/probe-$f.json" 2>&1 | tail -12 | tee -a "$LOG"
  REPORTS+=("$OUT/probe-$f.json")
done
# The engine reads no environment: benchmarks/bench_cases.engine_options() maps this variable
# (and TBPTT_BENCH_CUDA_GRAPHS=0) onto train_stream(graph_forward=..., cuda_graphs=...) for the
# profile and the benchmark below. The sweep (CLI) runs the engine's default forward, "fused".
export TBPTT_BENCH_GRAPH_FORWARD=$($PY benchmarks/gpu_probe.py --choose "${REPORTS[@]}")
say "graph forward: $TBPTT_BENCH_GRAPH_FORWARD; profile"
$PY benchmarks/gpu_probe.py --profile "$OUT/profile.txt" 2>&1 | tail -10 | tee -a "$LOG"

say "benchmark"
$PY -m pytest benchmarks -k cuda -q -p no:cacheprovider -W default --benchmark-min-rounds ${ROUNDS:-5} \
    --benchmark-json "$OUT/cuda.json" --benchmark-columns median,iqr,rounds 2>&1 | tail -60 | tee -a "$LOG"
$PY benchmarks/ratios.py "$OUT/cuda.json" --out "$OUT/cuda-ratios.md" 2>&1 | tee -a "$LOG"
cat "$OUT/cuda-ratios.md" | tee -a "$LOG"

LEFT=$(( BUDGET_S - ($(date +%s) - START) ))
say "quick sweep on cuda for at most $LEFT s"
if [ "$LEFT" -gt 20 ]; then
  timeout "$LEFT" $PY -m tbptt_bench sweep tasks/echo.toml tasks/language.toml tasks/copy.toml tasks/adding.toml \
      tasks/influence.toml --preset quick --device cuda --results /tmp/gpu-results --jobs 1 --quiet 2>&1 | tail -5 | tee -a "$LOG"
  tar czf "$OUT/sweep.tgz" -C /tmp/gpu-results . 2>&1 | tee -a "$LOG"
fi
say "done"
