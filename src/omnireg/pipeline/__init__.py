"""The registration pipeline: one registration from inputs to outputs, whatever the method.

::

    inputs (files or images) -> validation -> method -> evaluation -> outputs and report -> result.json
                                              |
                                              +- EngineMethod:   omnireg.optim.register (stages, guard)
                                              +- NetworkMethod:  affine stages, then a registration network
                                              +- ComposedMethod: a network, then engine stages from its field

* :func:`run_pipeline` (:class:`RegistrationRequest` -> :class:`PipelineResult`): validates every input before
  any work (:mod:`omnireg.pipeline.inputs`), runs a :class:`RegistrationMethod`, evaluates labels and
  landmarks, and writes the outputs and the report (:mod:`omnireg.pipeline.outputs`) the same way for every
  method;
* :func:`run_registration`: the same for files and a configuration, into a folder (``omnireg register``,
  ``omnireg batch``);
* :func:`register`: the Python API (``omnireg.register``), images or files in, a result with ``.save(out_dir)``;
* :func:`method_for`: the method of a configuration and the network options (``--model``, ``--refine``).

A new registration method is a subclass of :class:`RegistrationMethod` implementing ``run`` (returning a
:class:`MethodResult`); the pipeline gives it every output, the report and the checks.
"""

from .api import method_for, refine_config, register
from .inputs import RegistrationInputs, as_config, as_label_map, check_config, check_device, load_inputs
from .method import ComposedMethod, EngineMethod, MethodResult, RegistrationMethod
from .network import NetworkFrame, NetworkMethod, load_network
from .outputs import OUTPUT_NAMES, label_evaluation
from .run import PipelineResult, RegistrationRequest, run_pipeline, run_registration

__all__ = [
    "OUTPUT_NAMES",
    "ComposedMethod",
    "EngineMethod",
    "MethodResult",
    "NetworkFrame",
    "NetworkMethod",
    "PipelineResult",
    "RegistrationInputs",
    "RegistrationMethod",
    "RegistrationRequest",
    "as_config",
    "as_label_map",
    "check_config",
    "check_device",
    "label_evaluation",
    "load_inputs",
    "load_network",
    "method_for",
    "refine_config",
    "register",
    "run_pipeline",
    "run_registration",
]
