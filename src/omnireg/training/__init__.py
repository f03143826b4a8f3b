"""Training: synthesis from label maps, augmentation, known-truth cases, losses, the training loop, DDP.

- :mod:`~omnireg.training.synthesis`: images synthesised from label maps (SynthSeg / SynthMorph style).
- :mod:`~omnireg.training.labelmaps`: FreeSurfer structure tables, prepared label-map sets.
- :mod:`~omnireg.training.pairs`: training and validation pairs (and single images) from label maps or images.
- :mod:`~omnireg.training.losses`: registration losses from similarity / Dice / regulariser specs.
- :mod:`~omnireg.training.loop`: the shared loop (seeded batches, checkpoints, resume, budget, log, DDP).
- :mod:`~omnireg.training.distributed`: DDP set-up (torchrun; gloo on CPU, NCCL on CUDA).
- :mod:`~omnireg.training.registration`: training registration networks (model registry, validation Dice).
"""

from .randconv import RandConvConfig, RandConvNonlinearity, RandomConvolution, random_convolution
from .synthesis import ContrastMode, PairMode, SynthesisConfig, synthesize, synthesize_pair
from .synthetic import KnownCase, affine_matrix, bias_field, make_known_case, smooth_displacement, t2_like_remap

__all__ = [
    "ContrastMode",
    "PairMode",
    "RandConvConfig",
    "RandConvNonlinearity",
    "RandomConvolution",
    "SynthesisConfig",
    "random_convolution",
    "synthesize",
    "synthesize_pair",
    "KnownCase",
    "affine_matrix",
    "bias_field",
    "make_known_case",
    "smooth_displacement",
    "t2_like_remap",
]
