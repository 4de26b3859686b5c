"""Vectorised PyTorch implementations: the specification of every op and the fallback on every device."""
