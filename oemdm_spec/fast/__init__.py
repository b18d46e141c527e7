"""The fast path: Triton kernels with PyTorch fallbacks, the DiT model and the trainer. Never imports pyro.

    import oemdm_spec.fast as fast
    result = fast.train(fast.build_config({"preset": "tiny", "model": "lomdm"}))
    print(result.eval.bits)  # validation NELBO bound, bits per token (EMA weights)

Every kernel in ``fast.kernels`` has a float64 twin in ``oemdm_spec.reference`` and a property test against
it (``proofs_tests/test_kernels_*``).
"""

from .checkpoint import load_run
from .config import PRESETS, TrainConfig, build_config
from .evaluate import EvalResult, evaluate_bound
from .model import DiT, ModelConfig, OeMDM
from .objectives import LossOutput, draw_step_noise, oemdm_loss
from .processes import MODEL_TYPES, PROCESSES, Process, get_process, register
from .sample import sample
from .trainer import TrainingDiverged, TrainResult, train

__all__ = [
    "MODEL_TYPES", "PRESETS", "PROCESSES", "DiT", "EvalResult", "LossOutput", "ModelConfig", "OeMDM", "Process",
    "TrainConfig", "TrainResult", "TrainingDiverged", "build_config", "draw_step_noise", "evaluate_bound",
    "get_process", "load_run", "oemdm_loss", "register", "sample", "train",
]
