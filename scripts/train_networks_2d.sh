#!/usr/bin/env bash
# Make the shipped 2D registration networks (voxelmorph_2d, voxelmorph-diff_2d, pyramid_2d) on a CPU:
#
#   bash scripts/train_networks_2d.sh                   # from the repository root; every model, one after the other
#   MODELS="voxelmorph-diff" bash scripts/train_networks_2d.sh   # a subset (names: voxelmorph voxelmorph-diff pyramid
#                                                       #   pyramid-noaux pyramid-concat; the last two are ablations)
#   RESUME=1 bash scripts/train_networks_2d.sh          # continue interrupted runs from WORK's checkpoints
#
# 1. prepares the SynthSeg label maps at 2 mm (scripts/prepare_synthseg.py; skipped when DATA already holds them:
#    subjects 01-12 train, 13-15 validate, 16-20 are never read by training);
# 2. trains each network on axial slice pairs of two different subjects, synthesised with T1-like contrasts
#    (--mode t1: the same kind of contrast in both images; random contrasts do not get started on a CPU budget,
#    README "Registration networks"), loss LNCC + soft Dice of the warped labels, diffusion 1, batch 4, AdamW
#    1e-3 with cosine decay, STEPS steps, seed 0, one thread, into WORK (the same settings for every model: the
#    ablation budget of issue 18);
# 3. copies each shipped model file (not the ablations) into src/omnireg/data/weights/<name>_2d.pt and keeps,
#    beside it, every validation line of the training log and every 100th step line (<name>_2d.log.jsonl; the full
#    log stays in WORK).
#
# The README's same-budget ablation rows (benchmarks/networks.py --ndim 2) used the model files of pyramid,
# pyramid-noaux, pyramid-concat and voxelmorph-diff as they stood at step 4000 of this 10000-step schedule (the
# ablations were stopped there; the model file is rewritten at every checkpoint, so copy it when the log reaches
# the step you compare at).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-/work/data_cache/synthseg_2mm}
WORK=${WORK:-/tmp/omnireg-networks-2d}
STEPS=${STEPS:-10000}
MODELS=${MODELS:-voxelmorph-diff voxelmorph pyramid pyramid-noaux pyramid-concat}
DEST=src/omnireg/data/weights
mkdir -p "$WORK"
[ -f "$DATA/prepared.json" ] || OMP_NUM_THREADS=2 python scripts/prepare_synthseg.py --out "$DATA"
COMMON=(--label-maps "$DATA" --ndim 2 --mode t1 --loss lncc:1,dice:1 --reg diffusion:1 --batch-size 4 --lr 1e-3
        --steps "$STEPS" --val-every 1000 --checkpoint-every 200 --threads 1 --seed 0)
for name in $MODELS; do
    case $name in
        voxelmorph|voxelmorph-diff) args=(--model "$name") ;;
        pyramid) args=(--model pyramid --deep-supervision 0.3) ;;
        pyramid-noaux) args=(--model pyramid --deep-supervision 0.3 --model-options '{"aux_decoder": false}') ;;
        pyramid-concat) args=(--model pyramid --deep-supervision 0.3 --model-options '{"fusion": "concat"}') ;;
        *) echo "MODELS: unknown model $name" >&2; exit 2 ;;
    esac
    omnireg train registration "${args[@]}" "${COMMON[@]}" --out "$WORK/${name}_2d.pt" \
        "$([ -n "${RESUME:-}" ] && echo --resume || echo --force)"
    case $name in
        voxelmorph|voxelmorph-diff|pyramid)
            cp "$WORK/${name}_2d.pt" "$DEST/${name}_2d.pt"
            python - "$WORK/${name}_2d.log.jsonl" "$DEST/${name}_2d.log.jsonl" <<'PY'
import json, sys
keep = [l for l in open(sys.argv[1]) if "validation" in (r := json.loads(l)) or r.get("step", 0) % 100 == 0]
open(sys.argv[2], "w").writelines(keep)
PY
            echo "wrote $DEST/${name}_2d.pt and $DEST/${name}_2d.log.jsonl" ;;
    esac
done
