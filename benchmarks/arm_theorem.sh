#!/usr/bin/env bash
# The ARM theorem inside the trainer (issue 11 item 2; results in docs/results.md, "The ARM theorem in the
# trainer"). Tiny preset, embedded corpus (char tokenizer), seed 0, 300 steps, one CPU thread per run.
# Usage: benchmarks/arm_theorem.sh [out_dir]   (default runs/arm_theorem); then
#        python benchmarks/arm_theorem.py [out_dir]   for the table and the left-to-right NLL of oemdm-arm.
set -euo pipefail
OUT=${1:-runs/arm_theorem}
COMMON=(--preset tiny --steps 300 --seed 0 --threads 1 --max_minutes 0 --out_dir "$OUT")
run() { nice -n 5 oemdm train "${COMMON[@]}" "$@" > /dev/null; }
run --model ar --name ar
for eps in 0.1 0.03 0.01; do
  run --model oemdm-arm --eps "$eps" --name "arm-eps$eps"
done
run --model oemdm-block --block_size 4 --eps 0.01 --name block4-eps0.01
run --model bd3lm --block_size 4 --name bd3lm4
# the bound of each run as `oemdm eval` prints it (validation split, 4 batches of 64 sequences)
for r in "$OUT"/*/; do nice -n 5 oemdm eval "$r" --max-batches 4 --repeats 4; done
