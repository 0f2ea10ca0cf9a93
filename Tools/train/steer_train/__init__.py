"""Steer training: DPR (Decoupled Promptable Sequential Recommendation) in PyTorch."""

__version__ = "0.1.0"
