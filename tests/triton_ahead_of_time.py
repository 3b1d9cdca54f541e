"""Compile goft's Triton kernels for an sm_90a GPU on a machine without one (Triton's compiler and ptxas run on the
CPU), so that what the interpreter tolerates but the compiler refuses fails here.  Run as a script by
tests/ops/test_cuda_triton.py (the test process has Triton's interpreter switched on); prints one line per kernel
with ptxas's register and spill counts."""

import os
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from goft.ops import cuda_triton  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
FORWARD = {
    "x_ptr": "*fp32",
    "y_ptr": "*bf16",
    "blocks_ptr": "*fp32",
    "scale_ptr": "*fp32",
    "index_ptr": "*i32",
    "n_rows": "i32",
    "d": "i32",
    "stride_x": "i32",
    "stride_y": "i32",
    "chunk_step": "i32",
    "tiles_ptr": "*i64",
    "order_ptr": "*i64",
    "params_stride": "i32",
}
BACKWARD = {
    "x_ptr": "*bf16",
    "g_ptr": "*fp32",
    "gx_ptr": "*bf16",
    "blocks_ptr": "*fp32",
    "scale_ptr": "*fp32",
    "index_ptr": "*i32",
    "scratch_ptr": "*fp32",
    "grad_ptr": "*fp32",
    "grad_row": "i32",
    "n_rows": "i32",
    "tiles_per_program": "i32",
    "n_programs": "i32",
    "d": "i32",
    "n_blocks": "i32",
    "scratch_per_program": "i32",
    "stride_x": "i32",
    "stride_g": "i32",
    "stride_gx": "i32",
    "chunk_step": "i32",
}


def ptxas_report(ptx: str, name: str) -> str:
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        out = subprocess.run(
            [ptxas, "-arch=sm_90a", "-v", path, "-o", os.devnull], capture_output=True, text=True, check=True
        )
    return " ".join(
        line.split(":", 1)[-1].strip() for line in out.stderr.splitlines() if "registers" in line or "spill" in line
    )


def compile_one(kernel, signature: dict, constexprs: dict, warps: int, name: str) -> None:
    source = ASTSource(
        fn=kernel, signature={**signature, **dict.fromkeys(constexprs, "constexpr")}, constexprs=constexprs
    )
    compiled = triton.compile(source, target=TARGET, options={"num_warps": warps})
    print(name, ptxas_report(compiled.asm["ptx"], name))


def compile_all(d: int, depth: int) -> None:
    """Every launch goft makes for rows of width d at this depth (the tree and the butterfly; one pass or, past
    MAX_TILE, two per stack): forward from angles, a mixed-adapter forward from blocks through coordinate orders,
    and backward from angles (level inputs recovered by
    transposition, atomic gradient sums) and from blocks (level inputs kept, per-program partial sums)."""
    width = cuda_triton.padded_width(d)
    for compact in (True, False):
        seen = set()
        for launch in cuda_triton.plan_passes(d, depth, compact, top_first=True):
            common = launch.constexprs(width.bit_length() - 1, width, compact)
            key = tuple(sorted({**common, "STACK0": 0}.items()))
            if key in seen:
                continue
            seen.add(key)
            first, last = launch.kv_first + launch.lev_shift, launch.kv_end - 1 + launch.lev_shift
            label = f"D{width}-DV{launch.tile}-levels{first}..{last}-{'tree' if compact else 'general'}"
            for mixed in (False, True):  # one adapter from angles; a mixed batch from blocks, through orders
                compile_one(
                    cuda_triton.kernels._rotate_kernel,
                    FORWARD,
                    {**common, "HAS_SCALE": True, "TOP_FIRST": True, "ANGLES": not mixed}
                    | dict.fromkeys(("MIXED", "LOAD_ORDER", "STORE_ORDER"), mixed),
                    launch.warps(),
                    f"_rotate_kernel-{label}{'-mixed' if mixed else ''}",
                )
            for angles in (True, False):
                compile_one(
                    cuda_triton.kernels._rotate_backward_kernel,
                    BACKWARD,
                    {**common, "HAS_SCALE": True, "ANGLES": angles, "ATOMIC": angles, "CHUNKS": launch.chunks},
                    launch.warps(),
                    f"_rotate_backward_kernel-{label}-{'angles' if angles else 'blocks'}",
                )


if __name__ == "__main__":
    # usage: triton_ahead_of_time.py d depth [max_tile]
    if len(sys.argv) > 3:
        cuda_triton.planning.MAX_TILE = int(sys.argv[3])
    compile_all(int(sys.argv[1]), int(sys.argv[2]))
