"""onnxprune: structured pruning of ONNX models from any framework, validated and benchmarked."""

__version__ = "0.1.0"

from onnxprune.api import PruneResult, analyse, prune  # noqa: E402
from onnxprune.load.data import Dataset  # noqa: E402
from onnxprune.errors import BadInputError, OnnxPruneError, ValidationError  # noqa: E402

__all__ = ["prune", "analyse", "PruneResult", "Dataset", "OnnxPruneError", "BadInputError", "ValidationError",
           "__version__"]
