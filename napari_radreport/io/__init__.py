"""Readers and the Study model (no Qt, no torch)."""

from napari_radreport.io.loader import load_study
from napari_radreport.io.study import ImageData, SeriesInfo, Study, StudyReadError, StudyTags

__all__ = ["ImageData", "SeriesInfo", "Study", "StudyReadError", "StudyTags", "load_study"]
