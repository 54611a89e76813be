"""tbptt-bench: a reference benchmark for truncated backpropagation through time.

Importing the package does nothing but define names: no files, devices or environment are
touched. Start with ``tbptt_bench.styles`` (what each style computes), ``tbptt_bench.engine``
(``train_stream``) and the ``tbptt-bench`` command line.
"""

__version__ = "0.1.0"
