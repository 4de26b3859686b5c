"""Math of pyvidgen's ops: ``reference`` (PyTorch) and ``triton`` kernels. Installed as ``pyvidgen.kernels``."""
