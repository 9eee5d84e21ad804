"""The judge: radiomic features of tumours and the paper's reproducibility metrics (RE, CCC).

This package imports nothing of the methods it judges (models, diffusion, standardization).
"""

from diffusionct.radiomics.features import FEATURE_CLASSES, FeatureSettings, extract_features, feature_class
from diffusionct.radiomics.metrics import ccc, class_ccc, relative_error, reproducible_counts

__all__ = [
    "FEATURE_CLASSES", "FeatureSettings", "extract_features", "feature_class",
    "ccc", "class_ccc", "relative_error", "reproducible_counts",
]
