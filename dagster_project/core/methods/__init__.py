"""Unlearning methods, one file each; importing this package registers them all."""

from dagster_project.core.methods import graddiff, npo, simnpo  # noqa: F401
