"""The version string, in a module of its own so ``sockit --version`` imports nothing else."""

__version__ = "0.1.0.dev0"
