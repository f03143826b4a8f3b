#!/usr/bin/env bash
# Train the 3D networks in parallel processes on ONE GPU within a time budget, packing the model files and
# logs into at most three tar files in PACK (so that a run stopped by its time limit still returns what it
# had). Run from the repository root:
#
#   DATA=out/synthseg_2mm PACK=$OUT MINUTES=2.4 bash scripts/train_networks_gpu.sh
#   DEVICE=cpu MINUTES=0.3 STEPS=3 bash scripts/train_networks_gpu.sh      # smoke test on a CPU
#
# DATA is the folder written by scripts/prepare_synthseg.py (prepared.json + labels.pt: the training and
# validation subjects 01-15; the test subjects 16-20 are not in it). Every process preloads the label maps onto
# the device and synthesises its pairs there; it stops after MINUTES with a usable model file (rewritten at
# every checkpoint) and its JSON-lines log.
#
# What is trained (issues 17-19), 3D at 2 mm, random contrasts, SynthMorph-style Dice on the synthesised
# labels + diffusion regularisation, batch 2:
#   voxelmorph-diff_3d, pyramid_3d, pyramid-noaux_3d, pyramid-concat_3d: the same number of steps (STEPS, the
#     ablation budget of issue 18; cosine learning-rate decay over it), capped by MINUTES;
#   voxelmorph_3d: the same settings;
#   segmenter_3d: soft Dice over the 32 named structures + cross-entropy (the default --ce-weight 1), random contrasts, MINUTES.
set -uo pipefail
DATA=${DATA:-out/synthseg_2mm}
PACK=${PACK:-out/gpu_pack}
MINUTES=${MINUTES:-2.4}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-600}
WORK=${WORK:-/tmp/omnireg-gpu}
export PYTHONPATH=${PYTHONPATH:-src}
export PYTHONUNBUFFERED=1
mkdir -p "$WORK" "$PACK"
pids=()

run() {  # run NAME SUBCOMMAND ARGS...: one training process in the background
    local name=$1
    shift
    "${PYTHON:-python3}" -m omnireg -q train "$@" --label-maps "$DATA" --device "$DEVICE" --max-minutes "$MINUTES" \
        --out "$WORK/$name.pt" --force --seed 0 > "$WORK/$name.stdout" 2> "$WORK/$name.stderr" &
    pids+=($!)
    echo "started $name (pid $!)"
}

REG=(--ndim 3 --mode random --loss dice --reg diffusion:1 --batch-size 2 --lr 1e-3 --steps "$STEPS" --val-every 200
     --checkpoint-every 50)
run voxelmorph-diff_3d registration --model voxelmorph-diff "${REG[@]}"
run pyramid_3d registration --model pyramid --deep-supervision 0.3 "${REG[@]}"
run pyramid-noaux_3d registration --model pyramid --deep-supervision 0.3 --model-options '{"aux_decoder": false}' "${REG[@]}"
run pyramid-concat_3d registration --model pyramid --deep-supervision 0.3 --model-options '{"fusion": "concat"}' "${REG[@]}"
run voxelmorph_3d registration --model voxelmorph "${REG[@]}"
run segmenter_3d segmenter --ndim 3 --mode random --batch-size 2 --lr 3e-3 --steps 100000 --val-every 500 --checkpoint-every 100

pack() {  # three tar files, each written beside and moved into place (a stopped run keeps the last whole ones)
    local a=() b=() c=()
    for f in voxelmorph-diff_3d pyramid_3d; do [ -f "$WORK/$f.pt" ] && a+=("$f.pt"); done
    for f in pyramid-noaux_3d segmenter_3d; do [ -f "$WORK/$f.pt" ] && b+=("$f.pt"); done
    for f in pyramid-concat_3d voxelmorph_3d; do [ -f "$WORK/$f.pt" ] && c+=("$f.pt"); done
    (cd "$WORK" || exit 0
     shopt -s nullglob
     c+=(*.log.jsonl *.stderr *.stdout *.json)
     tar -cf "$PACK/.c.tar" "${c[@]}" 2>/dev/null && mv "$PACK/.c.tar" "$PACK/models_c.tar")
    [ ${#a[@]} -gt 0 ] && tar -cf "$PACK/.a.tar" -C "$WORK" "${a[@]}" 2>/dev/null && mv "$PACK/.a.tar" "$PACK/models_a.tar"
    [ ${#b[@]} -gt 0 ] && tar -cf "$PACK/.b.tar" -C "$WORK" "${b[@]}" 2>/dev/null && mv "$PACK/.b.tar" "$PACK/models_b.tar"
    return 0
}

alive() { for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
while alive; do
    sleep 15
    pack
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /'
done
wait
pack
for f in "$WORK"/*.stderr; do echo "== $f"; tail -n 3 "$f"; done
ls -la "$PACK"
