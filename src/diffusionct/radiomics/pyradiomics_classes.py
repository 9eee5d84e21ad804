"""The one place that calls pyradiomics' feature classes."""

from __future__ import annotations

import logging

import radiomics
import SimpleITK as sitk

# pyradiomics sets its logger to DEBUG and logs every class at INFO and notes at WARNING
radiomics.setVerbosity(logging.ERROR)
logging.getLogger("radiomics").setLevel(logging.ERROR)


def compute(class_name: str, image: sitk.Image, mask: sitk.Image, settings: dict) -> dict[str, float]:
    """All features of one pyradiomics class (``firstorder``, ``glcm``, ``glrlm``, ``ngtdm``)."""
    feature_class = radiomics.getFeatureClasses()[class_name](image, mask, **settings)
    feature_class.enableAllFeatures()
    return {name: float(value) for name, value in feature_class.execute().items()}
