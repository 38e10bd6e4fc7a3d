"""Models: the VGGT spatial encoder, connectors, and SpatialMLLM on Qwen2.5-VL."""
