"""goft's Givens-rotation math as pure functions; :mod:`goft.functional` is its public face.

pairing (the convention, level tables) -> blocks (parameters as 2×2 blocks, checks) -> backends (which kernel runs)
-> reference / cpu_numba / cuda_triton (the kernels) -> autograd (rotate, inverse, merge, unmerge).
"""
