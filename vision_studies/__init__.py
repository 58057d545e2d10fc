"""Vision Studies: the shared package behind the transfer-learning notebooks.

Modules, one job each: `registry` (datasets as data), `download`, `fixtures`, `data` (DataLoaders),
`augment`, `models`, `train`, `metrics`, `interpret`. Import from them directly; this file stays light so
that `vision-studies list` does not pay for importing torch.
"""

__version__ = "0.1.0"
