"""The report layer: tables, figures, the hardware comparison and the README block, built from
the run records alone (it never imports torch)."""

from .build import build_report

__all__ = ["build_report"]
