"""Triton kernels and their launchers (CUDA tensors; CPU tensors under ``TRITON_INTERPRET=1``)."""
