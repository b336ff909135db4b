"""The core layer: errors, strict TOML config, atomic files and the run-directory contract.

Every other stage may import from here; nothing here imports another stage, torch or Dask.
"""
