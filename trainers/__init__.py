"""What runs inside a training worker: spectral operator, JiT model, flow process, samplers, data, metrics, loop.

Plain PyTorch; imports neither `sweeps` nor `analysis` (dependencies point one way, DESIGN.md §2).
"""
