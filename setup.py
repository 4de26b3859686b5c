"""Build script: packages plus the optional C++ extension ``pyvidgen._C``.

Metadata lives in pyproject.toml. The extension is built only when torch is importable at build
time (``pip install --no-build-isolation``); a failed or skipped build leaves a working
pure-Python package on the reference backend, and ``pyvidgen info`` says why ``cpp`` is missing.
"""

from __future__ import annotations

import glob
import os
import platform
import sys

from setuptools import setup

PACKAGES = [
    "pyvidgen",
    "pyvidgen.ops",
    "pyvidgen.nn",
    "pyvidgen.models",
    "pyvidgen.data",
    "pyvidgen.cli",
    "pyvidgen.training",
    "pyvidgen.bench",
    "pyvidgen.kernels",
    "pyvidgen.kernels.reference",
    "pyvidgen.kernels.triton",
]
PACKAGE_DIR = {
    "pyvidgen.kernels": "kernels",
    "pyvidgen.kernels.reference": "kernels/reference",
    "pyvidgen.kernels.triton": "kernels/triton",
}


# PYVIDGEN_SANITIZE=1 builds the extension with AddressSanitizer and UndefinedBehaviorSanitizer (`make
# sanitize`): any out-of-bounds access, overflow or float-to-int conversion out of range aborts the process.
# float-cast-overflow is not part of -fsanitize=undefined in GCC, and it is the conversion a huge position makes.
SANITIZE = os.environ.get("PYVIDGEN_SANITIZE") == "1"
SANITIZER_FLAGS = ["-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all"]


def _cpu_flags() -> list[str]:
    """-O3 plus AVX2/FMA code (at::vec's AVX2 path) when the building machine has them.

    The extension is compiled where it is installed, so the build machine's CPU is the run machine's.
    PYVIDGEN_PORTABLE=1 builds for the baseline ISA instead.
    """
    flags = ["-O3", "-std=c++20", "-fopenmp"]
    if SANITIZE:
        flags = ["-O1", "-g", "-fno-omit-frame-pointer", "-std=c++20", "-fopenmp"]
        flags += SANITIZER_FLAGS
    if os.environ.get("PYVIDGEN_PORTABLE") == "1" or platform.machine() not in ("x86_64", "AMD64"):
        return flags
    try:
        with open("/proc/cpuinfo") as f:
            cpu = f.read()
    except OSError:
        return flags
    if " avx2" in cpu and " fma" in cpu:
        flags += ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"]
    return flags


def _extensions() -> tuple[list, dict]:
    if os.environ.get("PYVIDGEN_NO_EXTENSION") == "1":
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        print("pyvidgen: torch not importable at build time; building without the C++ extension", file=sys.stderr)
        return [], {}

    class OptionalBuildExtension(BuildExtension):
        """A compiler failure must not fail the install: the reference backend still works."""

        def run(self) -> None:
            try:
                super().run()
            except Exception as exc:  # noqa: BLE001 - any build failure degrades to the reference backend
                if os.environ.get("PYVIDGEN_REQUIRE_EXTENSION") == "1":
                    raise
                print(f"pyvidgen: C++ extension not built ({exc}); using the reference backend", file=sys.stderr)
                # Nothing was built, so there is nothing to install or copy next to the sources.
                self.extensions = []

    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/ops/*.cpp") + glob.glob("csrc/ops/cpu/*.cpp"))
    ext = CppExtension(
        "pyvidgen._C",
        sources,
        include_dirs=[os.path.abspath("csrc")],
        extra_compile_args=_cpu_flags(),
        extra_link_args=["-fopenmp"] + (SANITIZER_FLAGS if SANITIZE else []),
    )
    return [ext], {"build_ext": OptionalBuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(packages=PACKAGES, package_dir=PACKAGE_DIR, ext_modules=ext_modules, cmdclass=cmdclass)
