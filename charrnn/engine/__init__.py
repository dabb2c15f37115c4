"""The numeric engine: kernels, the batched GEMM, sampling kernels, the sampler, the
optimiser, BLAS threads and the model's parameters. Imports only NumPy, Numba,
SciPy and the package's config and errors."""
