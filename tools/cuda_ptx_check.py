"""Compile the CUDA training kernels (`plrnn_cuda`) to PTX without a GPU, as a GPU run would.

numba's CUDA simulator runs the kernels as Python, so it checks their arithmetic but not that
numba-cuda can type and lower them. This compiles every kernel, float32 and float64, for a chosen
compute capability (default 9.0, the H100/H200) with the real compiler, and reports per kernel the
PTX size, its local memory per thread and the number of float64 instructions in the float32
kernels (which must be 0: a float literal that promoted the arithmetic would show here).
It needs the `gpu` extra (numba-cuda and the toolkit wheels), not a GPU:

    pip install -e '.[gpu]'
    python tools/cuda_ptx_check.py [--cc 9.0] [--hidden 50]

(With the wheels installed elsewhere: PYTHONPATH=DIR, `import _numba_cuda_redirector` is done here,
and LD_LIBRARY_PATH naming DIR/nvidia/cuda_nvrtc/lib and DIR/nvidia/cuda_nvcc/nvvm/lib64.)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cc", default="9.0", help="compute capability, e.g. 8.0, 9.0")
    ap.add_argument("--latent", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=50)
    a = ap.parse_args()
    try:
        import _numba_cuda_redirector  # noqa: F401  (what numba-cuda's .pth does in site-packages)
    except ImportError:
        pass
    import numpy as np
    from numba import cuda, types

    from dsrecon.models.backends import plrnn_cuda as pc

    cc = tuple(int(x) for x in a.cc.split("."))
    M, L = a.latent, a.hidden
    print(f"numba.cuda: {cuda.__file__}; compute capability {a.cc}; M {M}, L {L}")
    bad = 0
    for np_dt, t in ((np.float32, types.float32), (np.float64, types.float64)):
        arr = lambda n, dt=t: types.Array(dt, n, "C")  # noqa: E731
        b, i64 = types.boolean, types.int64
        sh_f, sh_b = pc._sh_kernels(M, L, np_dt)
        pl_f, pl_b = pc._pl_kernels(M, np_dt)
        relu = arr(1, types.int8)
        sigs = [("shplrnn forward", sh_f, (arr(2), arr(3), arr(2), arr(2), arr(3), arr(3), arr(2), arr(2), b, i64, i64, b, arr(3), arr(3))),
                ("shplrnn backward", sh_b, (arr(3), arr(3), arr(3), arr(2), arr(2), arr(3), arr(3), arr(2), b, i64, i64, arr(2), arr(2))),
                ("plrnn forward", pl_f, (arr(2), arr(3), arr(2), arr(2), arr(3), arr(2), relu, i64, i64, b, arr(3), arr(3))),
                ("plrnn backward", pl_b, (arr(3), arr(3), arr(3), arr(2), arr(2), arr(3), relu, i64, i64, arr(2), arr(2)))]
        for name, k, sig in sigs:
            ptx, _ = cuda.compile_ptx(k.py_func, sig, cc=cc)
            local = sum(int(m) for m in re.findall(r"\.local \.align \d+ \.b8 \s*\S+\[(\d+)\]", ptx))
            f64 = sum(1 for line in ptx.splitlines() if ".f64" in line) if np_dt is np.float32 else 0
            bad += f64
            print(f"{name:18s} {np.dtype(np_dt).name:8s} PTX {len(ptx):7d} chars, local {local:5d} B/thread"
                  + (f", float64 instructions {f64}" if np_dt is np.float32 else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
