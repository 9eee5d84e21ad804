"""The one place that calls pyradiomics' feature classes."""

from __future__ import annotations

import logging

import radiomics
import SimpleITK as sitk

radiomics.setVerbosity(logging.ERROR)  # pyradiomics logs every class at INFO and notes at WARNING


def compute(class_name: str, image: sitk.Image, mask: sitk.Image, settings: dict) -> dict[str, float]:
    """All features of one pyradiomics class (``firstorder``, ``glcm``, ``glrlm``, ``ngtdm``)."""
    feature_class = radiomics.getFeatureClasses()[class_name](image, mask, **settings)
    feature_class.enableAllFeatures()
    return {name: float(value) for name, value in feature_class.execute().items()}
