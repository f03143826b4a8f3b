"""Networks: feature extractors, registration networks, and the model-file store.

- :mod:`omnireg.networks.disa`: the DISA feature CNN (stride 4, 16 channels, receptive field 49).
- :mod:`omnireg.networks.mad`: the MAD patch-pair distance CNN.
- :mod:`omnireg.networks.unet`: a configurable 2D/3D U-Net (VoxelMorph's backbone, DeepSim's segmenter).
- :mod:`omnireg.networks.segmenter`: the anatomy segmenter (U-Net + class head; its encoder features drive DeepSim).
- :mod:`omnireg.networks.registration`: the registration networks' shared types
  (:class:`NetworkOutput`, :class:`RegistrationNetwork`) and voxel-unit field operations.
- :mod:`omnireg.networks.voxelmorph`: VoxelMorph (kinds ``voxelmorph`` and ``voxelmorph-diff``).
- :mod:`omnireg.networks.pyramid`: the pyramid registration network of arXiv 2408.05717 (shared
  encoder, auxiliary decoder, MSFB fusion from :mod:`omnireg.networks.msfb`; kind ``pyramid``).
- :mod:`omnireg.networks.store`: one-file models (config + weights + provenance), shipped weights.

This package depends on :mod:`omnireg.core`, :mod:`omnireg.io` (atomic writing of model files) and
:mod:`omnireg.transforms` only; the similarity measures that use these networks live in
:mod:`omnireg.similarity`, losses and training loops in :mod:`omnireg.training`.
"""

# Architecture modules: importing one registers its model kind(s) with the store (the store imports
# none of them; see omnireg.networks.store). A new architecture adds one line here.
from . import disa as disa
from . import mad as mad
from . import pyramid as pyramid
from . import segmenter as segmenter
from . import voxelmorph as voxelmorph
from .registration import (
    NetworkOutput,
    RegistrationNetwork,
    compose_displacements,
    integrate_velocity_voxels,
    resize_displacement,
    warp_voxels,
)
from .pyramid import PyramidConfig, PyramidNet
from .store import load_model, packaged_weights, resolve_weights, save_model
from .unet import UNet

__all__ = [
    "NetworkOutput",
    "PyramidConfig",
    "PyramidNet",
    "RegistrationNetwork",
    "UNet",
    "compose_displacements",
    "integrate_velocity_voxels",
    "load_model",
    "packaged_weights",
    "resolve_weights",
    "resize_displacement",
    "save_model",
    "warp_voxels",
]
