"""Benchmarks: scripts that print a table, run from the repository root as `python -m
benchmarks.<script>` (benchmarks/README.md has the tables). Every one builds, times and costs its
steps through `benchmarks.harness`. Importing this package imports nothing else."""
