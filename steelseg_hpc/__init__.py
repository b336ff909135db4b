"""steelseg-hpc."""
