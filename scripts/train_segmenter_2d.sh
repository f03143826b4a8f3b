#!/usr/bin/env bash
# Make the shipped 2D segmenter (DeepSim's default for 2D images, `omnireg segment` on 2D images) on a CPU:
#
#   bash scripts/train_segmenter_2d.sh            # from the repository root; about 50 min on one core (idle machine)
#   RESUME=1 bash scripts/train_segmenter_2d.sh   # continue an interrupted run from WORK's checkpoint
#
# 1. prepares the SynthSeg label maps at 2 mm (scripts/prepare_synthseg.py; skipped when DATA already holds them:
#    subjects 01-12 train, 13-15 validate, 16-20 are never read by training);
# 2. trains a 2D segmenter on axial slices synthesised with a random contrast per image (seed 0, 24000 steps of
#    4 images, soft Dice + cross-entropy, one thread) into WORK;
# 3. copies the model file into src/omnireg/data/weights/segmenter_2d.pt and keeps, beside it, every validation
#    line of the training log and every 100th step line (segmenter_2d.log.jsonl; the full log stays in WORK).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-/work/data_cache/synthseg_2mm}
WORK=${WORK:-/tmp/omnireg-segmenter-2d}
STEPS=${STEPS:-24000}
DEST=src/omnireg/data/weights
mkdir -p "$WORK"
[ -f "$DATA/prepared.json" ] || OMP_NUM_THREADS=2 python scripts/prepare_synthseg.py --out "$DATA"
omnireg train segmenter --label-maps "$DATA" --out "$WORK/segmenter_2d.pt" --ndim 2 --mode random --batch-size 4 \
    --lr 3e-3 --ce-weight 1.0 --steps "$STEPS" --val-every 1000 --checkpoint-every 200 --threads 1 --seed 0 "$([ -n "${RESUME:-}" ] && echo --resume || echo --force)"
cp "$WORK/segmenter_2d.pt" "$DEST/segmenter_2d.pt"
python - "$WORK/segmenter_2d.log.jsonl" "$DEST/segmenter_2d.log.jsonl" <<'PY'
import json, sys
keep = [l for l in open(sys.argv[1]) if "validation" in (r := json.loads(l)) or r.get("step", 0) % 100 == 0]
open(sys.argv[2], "w").writelines(keep)
PY
echo "wrote $DEST/segmenter_2d.pt and $DEST/segmenter_2d.log.jsonl"
