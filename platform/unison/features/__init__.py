"""Features: the one transform from a ticket and its customer's features to model inputs, and their lookup."""

from unison.features.transform import (
    CUSTOMER_FEATURES,
    NUMERIC_FEATURES,
    TRANSFORM_VERSION,
    feature_matrix,
    transform,
)

__all__ = [
    "CUSTOMER_FEATURES",
    "NUMERIC_FEATURES",
    "TRANSFORM_VERSION",
    "feature_matrix",
    "transform",
]
