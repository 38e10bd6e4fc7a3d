"""Space-aware frame sampling: voxel coverage and greedy maximum coverage."""
