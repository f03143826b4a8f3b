#!/usr/bin/env bash
# The exact commands that produced the shipped DISA weights (src/omnireg/data/weights/disa_{3d,2d}.pt).
# Run from the repository root with ../shared/data beside it; WORK is any scratch folder.
# Each model file records this command, its data, settings, losses and held-out validation in its metadata
# (`python -c "import torch; print(torch.load('src/omnireg/data/weights/disa_3d.pt', weights_only=True)['meta'])"`),
# and in src/omnireg/data/weights/disa_{3d,2d}.validation.json/.png.
set -euo pipefail
WORK=${WORK:-/tmp/disa_data}
SHARED=${SHARED:-../shared/data}
python scripts/make_disa_pairs.py --shared "$SHARED" --out "$WORK" --split v1   # the split these models were made with
# 2D: the same 3D pairs (random oblique planes) + the elastix 2D T1/PD example (train); the ITK T1/PD slices held out
cp "$WORK/pairs.csv" "$WORK/pairs2d.csv"
S=$(cd "$SHARED" && pwd)
echo "$S/elastix_example_2d_t1_pd/fixed_t1.nii.gz,$S/elastix_example_2d_t1_pd/moving_pd.nii.gz,train" >> "$WORK/pairs2d.csv"
echo "$S/itk_brain_2d_slices/BrainT1Slice.nii.gz,$S/itk_brain_2d_slices/BrainProtonDensitySlice.nii.gz,val" >> "$WORK/pairs2d.csv"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
omnireg -v train disa --pairs "$WORK/pairs.csv" --out "$WORK/disa_3d.pt" --ndim 3 --patch-size 21 --steps 2000 --batch-size 24 --seed 0 --threads 1
# continued from the step-2000 checkpoint with the cosine schedule stretched to 4000 steps; that run was
# stopped (Ctrl-C, for lack of time) after its step-2650 checkpoint and finished with a 3000-step schedule
# (learning rate 8e-5 -> 5e-5 over the last 350 steps)
omnireg -v train disa --pairs "$WORK/pairs.csv" --out "$WORK/disa_3d.pt" --ndim 3 --patch-size 21 --steps 4000 --batch-size 24 --seed 0 --threads 1 --resume
omnireg -v train disa --pairs "$WORK/pairs.csv" --out "$WORK/disa_3d.pt" --ndim 3 --patch-size 21 --steps 3000 --batch-size 24 --seed 0 --threads 1 --resume
# then continued to 5000 steps (the held-out correlation was still rising), on 2 threads
omnireg -v train disa --pairs "$WORK/pairs.csv" --out "$WORK/disa_3d.pt" --ndim 3 --patch-size 21 --steps 5000 --batch-size 24 --seed 0 --threads 2 --resume
# (the four commands above ran at commit 6b49f7b, which still accepted --patch-size 21; from then on patch sizes
# are 8 m + 1, since with 21 the compared "centre" feature sat 2 voxels off-centre per axis)
# fine-tuned from that model on dense 41^3 crops in groups of 4 offsets with the within-group loss
# (src/omnireg/data/weights/DISA.md, "The offset profile"): 2000 steps on 2 threads
mv "$WORK/disa_3d.pt" "$WORK/disa_3d_v1.pt"
omnireg -v train disa --pairs "$WORK/pairs.csv" --out "$WORK/disa_3d.pt" --ndim 3 --steps 2000 --batch-size 8 --group-size 4 --relative-weight 1.0 --crop-size 41 --init "$WORK/disa_3d_v1.pt" --seed 0 --threads 2 --checkpoint-every 100
omnireg -v train disa --pairs "$WORK/pairs2d.csv" --out "$WORK/disa_2d.pt" --ndim 2 --patch-size 41 --steps 5000 --batch-size 32 --seed 0 --threads 1
cp "$WORK"/disa_3d.pt "$WORK"/disa_2d.pt "$WORK"/disa_3d.validation.* "$WORK"/disa_2d.validation.* src/omnireg/data/weights/
