"""Models: the optimization pipeline, the versioned registry, and the one Predictor every path uses.

Importing this package stays cheap: torch is only imported by the optimization modules (export, head,
optimize, benchmark), which serving never loads.
"""

from unison.model.manifest import Manifest, VariantInfo
from unison.model.predictor import Predictions, Predictor, PredictorInputError, PredictorOptions
from unison.model.registry import Artifact, ArtifactError, Registry, RegistryError

__all__ = [
    "Artifact",
    "ArtifactError",
    "Manifest",
    "Predictions",
    "Predictor",
    "PredictorInputError",
    "PredictorOptions",
    "Registry",
    "RegistryError",
    "VariantInfo",
]
