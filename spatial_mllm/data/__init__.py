"""Scenes, videos, spatial QA and dataset formats (never imports models)."""
