"""Benchmarks runnable as modules (``python -m benchmarks.router.bench_router``)."""
