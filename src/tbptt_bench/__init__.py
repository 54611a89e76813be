"""tbptt-bench: a reference benchmark for truncated backpropagation through time.

Importing the package does nothing but define names: no files, devices or environment are
touched. Start with ``tbptt_bench.styles`` (what each style computes), ``tbptt_bench.engine``
(``train_stream``), ``tbptt_bench.load_results`` (run records as DataFrames, see
docs/results.md) and the ``tbptt-bench`` command line.
"""

__version__ = "0.1.0"
__all__ = ["__version__", "load_results"]


def __getattr__(name: str):
    # lazy: ``import tbptt_bench`` stays free of pandas (and of everything else)
    if name == "load_results":
        from .report.load import load_results

        return load_results
    raise AttributeError(f"module 'tbptt_bench' has no attribute {name!r}")
