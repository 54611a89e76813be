"""Engine paths: interchangeable implementations of training one stream, behind one contract.

``base.py`` states it (``Path``, built from a frozen ``PathInputs``); ``selection.py`` chooses one
(``PATH_TABLE``); ``chunked.py`` is the chunk loop the autograd and manual-elman paths share; the
path modules are named after the ``engine_path`` they record (autograd, manual-elman,
static-elman / cuda-graph-elman).
"""
