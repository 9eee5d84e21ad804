"""Reading and writing CT volumes and masks: DICOM series, RTSTRUCT, NIfTI/NRRD/MHA, folder scans.

This layer knows nothing about networks or features: it turns files into :class:`Volume` objects
and back.
"""

from diffusionct.io.volume import Volume
from diffusionct.io.dicom import read_dicom_series
from diffusionct.io.dicom_writer import write_dicom_series
from diffusionct.io.image import read_image, read_volume, write_nifti
from diffusionct.io.rtstruct import read_rtstruct_mask, rtstruct_roi_names

__all__ = [
    "Volume",
    "read_dicom_series",
    "write_dicom_series",
    "read_image",
    "read_volume",
    "write_nifti",
    "read_rtstruct_mask",
    "rtstruct_roi_names",
]
