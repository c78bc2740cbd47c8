"""Benchmarks: figures saved as JSON + Markdown (+ PNG), always beside their baseline."""
