"""One process object per model type, registered by name (see ``base.py`` for the interface).

    proc = get_process(cfg)            # the model's process; model.process holds it
    PROCESSES["lomdm"]                 # the class

Files are named after the schedule family: ``polynomial.py`` (MDLM, GenMD4, LoMDM), ``bd3lm.py``,
``ar.py``, ``window.py`` (OeMDM with the ε-window schedules: oemdm-arm, oemdm-block).
"""

# registration order = the order of MODEL_TYPES in help texts and errors
from . import polynomial  # noqa: I001, F401  (mdlm, genmd4, lomdm)
from . import bd3lm, ar, window  # noqa: I001, F401
from .base import PROCESSES, SAMPLERS, LossOutput, Process, pearson, process_class, register

MODEL_TYPES: tuple[str, ...] = tuple(PROCESSES)

__all__ = ["MODEL_TYPES", "PROCESSES", "SAMPLERS", "LossOutput", "Process", "get_process", "pearson",
           "process_class", "register"]


def get_process(cfg) -> Process:  # noqa: ANN001  (a ModelConfig; imported lazily by model.py)
    return process_class(cfg.model_type)(cfg)
