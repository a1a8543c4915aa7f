"""Weight attribution: which weights an unlearning run may change. A component, not a method: its mask
composes with every method through `run_unlearning(..., mask=...)`. See `wagle.py` (arXiv 2410.17509)."""

from dagster_project.core.attribution import wagle
from dagster_project.core.attribution.wagle import *  # noqa: F403  (the public API, listed in wagle.__all__)

__all__ = list(wagle.__all__)
