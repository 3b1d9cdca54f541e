"""Compile goft's Triton kernels for an sm_90a GPU on a machine without one (Triton's compiler and ptxas run on the
CPU), so that what the interpreter tolerates but the compiler refuses fails here.  Run as a script by
tests/test_ops_cuda_triton.py (the test process has Triton's interpreter switched on); prints one line per kernel
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
FORWARD = {"x_ptr": "*fp32", "y_ptr": "*bf16", "blocks_ptr": "*fp32", "scale_ptr": "*fp32", "index_ptr": "*i32",
           "n_rows": "i32", "d": "i32", "stride_x": "i32", "stride_y": "i32"}
BACKWARD = {"x_ptr": "*bf16", "g_ptr": "*fp32", "gx_ptr": "*bf16", "blocks_ptr": "*fp32", "scale_ptr": "*fp32",
            "index_ptr": "*i32", "scratch_ptr": "*fp32", "part_blocks_ptr": "*fp32", "part_scale_ptr": "*fp32",
            "n_rows": "i32", "d": "i32", "n_blocks": "i32", "scratch_per_program": "i32", "stride_x": "i32",
            "stride_g": "i32", "stride_gx": "i32"}


def ptxas_report(ptx: str, name: str) -> str:
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        out = subprocess.run([ptxas, "-arch=sm_90a", "-v", path, "-o", os.devnull], capture_output=True, text=True,
                             check=True)
    return " ".join(line.split(":", 1)[-1].strip() for line in out.stderr.splitlines()
                    if "registers" in line or "spill" in line)


def compile_all(width: int, per_stack: int, depth: int) -> None:
    for compact in (True, False):
        common = {"HAS_SCALE": True, "L": per_stack, "M": per_stack * depth, "D": width,
                  "BM": cuda_triton.tile_rows(width), "COMPACT": compact}
        for kernel, signature, extra in ((cuda_triton._rotate_kernel, FORWARD, {"TOP_FIRST": True}),
                                         (cuda_triton._rotate_backward_kernel, BACKWARD, {})):
            constexprs = {**common, **extra}
            source = ASTSource(fn=kernel, signature={**signature, **dict.fromkeys(constexprs, "constexpr")},
                               constexprs=constexprs)
            compiled = triton.compile(source, target=TARGET, options={"num_warps": 4})
            name = f"{kernel.__name__}-D{width}-M{per_stack * depth}-{'compact' if compact else 'full'}"
            print(name, ptxas_report(compiled.asm["ptx"], name))


if __name__ == "__main__":
    compile_all(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
