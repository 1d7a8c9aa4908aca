"""Benchmarks of mesh_decoder: scripts, the frozen reference decoder and committed results."""
