"""The compiled MaxSim kernels of ``uniembed.core.codecs`` (everything else is in pyproject.toml).

``pip install -e .`` builds them; in a worktree, ``python setup.py build_ext --inplace``.
"""

import sys

from setuptools import Extension, setup

# Portable flags only: the SIMD paths carry their own target attributes and are picked at run time;
# no FMA contraction, so that each SIMD path does the arithmetic its portable twin does.
FLAGS = (
    []
    if sys.platform == "win32"
    else ["-O3", "-std=gnu11", "-ffp-contract=off", "-Wall", "-Wno-unknown-pragmas"]
)

setup(
    ext_modules=[
        Extension(
            "uniembed.core._kernels",
            sources=["src/uniembed/core/_kernels.c"],
            extra_compile_args=FLAGS,
        )
    ]
)
