"""Engine paths: interchangeable implementations of one TBPTT update, each module named after the
``engine_path`` string it records (autograd, manual-elman, static-elman / cuda-graph-elman)."""
