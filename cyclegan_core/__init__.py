"""CycleAug's model library: CycleGAN networks and training, ingest, generation, validation, shards.

Plain PyTorch and pyarrow, usable from a notebook; no orchestrator is imported here.
"""

__version__ = "0.1.0"
