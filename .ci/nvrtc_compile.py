"""Compile every kernels/*.cu with NVRTC exactly as gpudeblur's CuPy path does, without a GPU.

On a GPU the kernels are not built by nvcc but by NVRTC, through ``cupy.RawModule`` with
``gpudeblur._kernels.module_source``'s code, options and name expressions (each templated
kernel instantiated for float and double). This runs CuPy's own NVRTC call
(``cupy.cuda.compiler.compile_using_nvrtc``, which adds ``-arch=sm_XX`` and
``--device-as-default-execution-space`` as a RawModule compile does; the include folders come
from ``core.assemble_cupy_compiler_options`` as RawModule's do, and ``-ftz=true`` is added
here as ``_compile_with_cache_cuda`` adds it) for sm_80 and sm_90, and fails on any error, any
compiler warning, or a name expression that does not resolve. CuPy asks the device for the
highest architecture it can emit cubin for; without a device that one question is answered
here (cubin, as on a GPU whose architecture NVRTC knows).

Needs CuPy and NVRTC (``pip install cupy-cuda13x nvidia-cuda-nvrtc``), no GPU. Run from the
repository root: ``python .ci/nvrtc_compile.py``.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

ARCHES = ("80", "90")


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import cupy.cuda.compiler as compiler
    from cupy._core import core

    from gpudeblur import _kernels

    # without a device: the arch option CuPy would pick for a known architecture (cubin)
    compiler._get_arch_for_options_for_nvrtc = lambda arch=None: (f"-arch=sm_{arch}", "cubin")
    print(f"NVRTC {'.'.join(map(str, compiler._get_nvrtc_version()))}, CuPy {__import__('cupy').__version__}")
    failed = 0
    sources = _kernels.kernel_sources()
    if sorted(p.name for p in sources) != sorted(_kernels.KERNEL_NAMES):
        print(f"kernels/*.cu {sorted(p.name for p in sources)} != KERNEL_NAMES {sorted(_kernels.KERNEL_NAMES)}")
        failed += 1
    for filename in sorted(_kernels.KERNEL_NAMES):
        code, options, names = _kernels.module_source(filename)
        # RawModule's compile: CuPy's include folders (CCCL, its own, CUDA_PATH's) around ours
        options = core.assemble_cupy_compiler_options(options)
        for arch in ARCHES:
            log = io.StringIO()
            try:
                cubin, mapping = compiler.compile_using_nvrtc(
                    code, options=options + ("-ftz=true",), arch=arch, name_expressions=names, log_stream=log)
            except Exception as exc:  # CompileException: the log is in its message
                print(f"{filename} sm_{arch}: FAILED\n{exc}")
                failed += 1
                continue
            problems = []
            if log.getvalue().strip():
                problems.append(f"compiler output:\n{log.getvalue().strip()}")
            missing = [n for n in names if not mapping.get(n)]
            if missing:
                problems.append(f"unresolved name expressions: {missing}")
            if problems:
                print(f"{filename} sm_{arch}: FAILED\n" + "\n".join(problems))
                failed += 1
            else:
                print(f"{filename} sm_{arch}: ok ({len(cubin)} bytes of cubin, {len(names)} kernels)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
