"""The one place that calls pyradiomics' feature classes."""

from __future__ import annotations

import contextlib
import logging
import threading

import numpy as np
import radiomics
import SimpleITK as sitk
from radiomics import imageoperations

# pyradiomics sets its logger to DEBUG and logs every class at INFO and notes at WARNING
radiomics.setVerbosity(logging.ERROR)
logging.getLogger("radiomics").setLevel(logging.ERROR)


_pyradiomics_bin_edges = imageoperations.getBinEdges


def _bin_edges(parameterValues, **kwargs):
    """pyradiomics' bin edges, except with ``binLowerBound`` (a re-segmentation's lower bound) and a fixed bin
    width: then edges start at that bound, so grey levels are numbered as IBSI 2.7.2 numbers them (pyradiomics
    starts at floor(min / width) * width). binImage looks this function up in its module at each call."""
    lower = kwargs.get("binLowerBound")
    if lower is None or kwargs.get("binCount") is not None:
        return _pyradiomics_bin_edges(parameterValues, **kwargs)
    width = float(kwargs.get("binWidth", 25))
    return np.arange(lower, float(np.max(parameterValues)) + 2 * width, width)


_BINNING_LOCK = threading.Lock()


@contextlib.contextmanager
def _ibsi_bin_edges():
    """:func:`_bin_edges` in pyradiomics' module while one of our classes runs, pyradiomics' own otherwise: a user's
    pyradiomics calls in the same process are left as pyradiomics makes them (one class at a time across threads)."""
    with _BINNING_LOCK:
        imageoperations.getBinEdges = _bin_edges
        try:
            yield
        finally:
            imageoperations.getBinEdges = _pyradiomics_bin_edges


def compute(class_name: str, image: sitk.Image, mask: sitk.Image, settings: dict, grey_levels: int | None = None) -> dict[str, float]:
    """All features of one pyradiomics class (``firstorder``, ``glcm``, ``glrlm``, ``ngtdm``, ...). ``grey_levels``:
    the number of grey levels N_g of the whole ROI when ``image`` is a part of it (one slice): pyradiomics takes the
    part's highest level, which changes the features normalised by N_g (IDN, IDMN)."""
    with _ibsi_bin_edges():
        feature_class = radiomics.getFeatureClasses()[class_name](image, mask, **settings)
        if grey_levels is not None and "Ng" in feature_class.coefficients:
            feature_class.coefficients["Ng"] = int(grey_levels)
        feature_class.enableAllFeatures()
        return {name: float(value) for name, value in feature_class.execute().items()}
