"""Networks: the learned similarity measures' architectures and the model-file store.

- :mod:`omnireg.networks.disa`: the DISA feature CNN (stride 4, 16 channels, receptive field 49).
- :mod:`omnireg.networks.mad`: the MAD patch-pair distance CNN.
- :mod:`omnireg.networks.store`: one-file models (config + weights + provenance), shipped weights.

This package depends on :mod:`omnireg.core` only; the similarity measures that use these networks
live in :mod:`omnireg.similarity` and the training code in :mod:`omnireg.training`.
"""

from .store import load_model, packaged_weights, resolve_weights, save_model

__all__ = ["load_model", "packaged_weights", "resolve_weights", "save_model"]
