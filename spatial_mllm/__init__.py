"""spatial_mllm — Spatial-MLLM (Wu et al., 2025, arXiv 2505.23747), reimplemented and made usable.

Data flows one way (see README): data → sampling → models → train → eval. Importing the package is cheap;
heavy libraries are imported by the submodules that need them.
"""

__version__ = "0.1.0"
