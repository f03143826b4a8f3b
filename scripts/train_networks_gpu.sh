#!/usr/bin/env bash
# DRAFT (the lead finalises it): train every shipped registration network in parallel processes on ONE GPU
# within a time budget. Run from the repository root on the GPU machine:
#
#   DATA=out/synthseg_2mm OUT=out/gpu_models MINUTES=7 bash scripts/train_networks_gpu.sh
#
# DATA is the folder written by scripts/prepare_synthseg.py (prepared.json + aligned/; ~3 MB, carry it to the
# GPU machine inside an ignored path such as out/). Every process:
#   - preloads the aligned 2 mm label maps of its training and validation subjects onto the GPU once and
#     synthesises every pair there (no data loading during training);
#   - stops after --max-minutes with a checkpoint (OUT.pt.ckpt), a usable model file (OUT.pt, rewritten at
#     every checkpoint) and its JSON-lines log (OUT.log.jsonl); `--resume` continues exactly;
#   - uses a cosine learning-rate schedule over --steps: set STEPS_* to what fits in the budget (measured
#     rates: see the README section "Learning-based registration: training").
# Subjects 16-20 (the test split of prepared.json) are never read.
set -euo pipefail
DATA=${DATA:-out/synthseg_2mm}
OUT=${OUT:-out/gpu_models}
MINUTES=${MINUTES:-7}
STEPS_3D=${STEPS_3D:-3000}
STEPS_2D=${STEPS_2D:-6000}
mkdir -p "$OUT"

run() {  # run NAME ARGS...: one training process in the background, its stderr in OUT/NAME.stderr
    local name=$1
    shift
    python -m omnireg train registration --label-maps "$DATA" --device cuda --max-minutes "$MINUTES" \
        --out "$OUT/$name.pt" --force --checkpoint-every 100 --seed 0 "$@" > "$OUT/$name.stdout" 2> "$OUT/$name.stderr" &
    echo "started $name (pid $!)"
}

# Issue 17: shipped voxelmorph / voxelmorph-diff, 3D and 2D, random contrasts, trained like SynthMorph (Dice on
# the synthesised labels; images of independent random contrasts, so any modality pair is learned).
COMMON_3D=(--ndim 3 --mode random --loss dice --reg diffusion:1 --batch-size 2 --lr 1e-4 --steps "$STEPS_3D" --val-every 250)
COMMON_2D=(--ndim 2 --mode random --loss dice --reg diffusion:1 --batch-size 16 --lr 1e-4 --steps "$STEPS_2D" --val-every 500)
run voxelmorph_3d --model voxelmorph "${COMMON_3D[@]}"
run voxelmorph-diff_3d --model voxelmorph-diff "${COMMON_3D[@]}"
run voxelmorph_2d --model voxelmorph "${COMMON_2D[@]}"
run voxelmorph-diff_2d --model voxelmorph-diff "${COMMON_2D[@]}"

# Issue 18 (when --model pyramid is registered): the full model and its ablations, same budget (steps x batch).
# run pyramid_3d --model pyramid --deep-supervision 0.3 "${COMMON_3D[@]}"
# run pyramid_2d --model pyramid --deep-supervision 0.3 "${COMMON_2D[@]}"
# run pyramid_noaux_3d --model pyramid --model-options '{"aux_decoder": false}' --deep-supervision 0.3 "${COMMON_3D[@]}"
# run pyramid_concat_3d --model pyramid --model-options '{"fusion": "concat"}' --deep-supervision 0.3 "${COMMON_3D[@]}"

# Issue 19 (when `omnireg train segmenter` and the deepsim similarity exist): the segmenter first, then
# voxelmorph-diff trained with DeepSim vs NCC vs MSE at one budget (T1-like pairs: an intensity loss needs one
# contrast); these would run in a second phase, after the segmenter, or with a segmenter trained earlier.
# run vmdiff_ncc_3d --model voxelmorph-diff --ndim 3 --mode t1 --loss ncc --reg diffusion:1 --batch-size 2 --lr 1e-4 --steps "$STEPS_3D"
# run vmdiff_mse_3d --model voxelmorph-diff --ndim 3 --mode t1 --loss mse --reg diffusion:1 --batch-size 2 --lr 1e-4 --steps "$STEPS_3D"
# run vmdiff_deepsim_3d --model voxelmorph-diff --ndim 3 --mode t1 --loss deepsim:2,ncc:1 --reg diffusion:1 --batch-size 2 --lr 1e-4 --steps "$STEPS_3D"

wait
for f in "$OUT"/*.stderr; do echo "== $f"; tail -n 2 "$f"; done
nvidia-smi --query-gpu=memory.used,memory.total --format=csv || true
