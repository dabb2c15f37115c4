"""One training run: preparing it, the trainer, evaluation, MPI, the memory
estimate, run directories and their plots."""
