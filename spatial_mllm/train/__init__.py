"""Trainers: SFT, cold start, GRPO, and their rewards."""
