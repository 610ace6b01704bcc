"""Page cleaning and segmentation (OpenCV): each step a small function, all driven by `prepare_page`."""
from folioscan.workers.prep.pipeline import PrepOptions, prepare_page

__all__ = ["PrepOptions", "prepare_page"]
