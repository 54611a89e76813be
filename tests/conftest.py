"""Shared test settings.

One intra-op thread: the tests run tiny tensors where thread start-up dominates, and the CI
machine has two cores shared with other work; results do not depend on it.
"""

import torch

torch.set_num_threads(1)
