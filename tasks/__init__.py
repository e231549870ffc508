"""Prefect tasks: thin wrappers over ``cyclegan_core.pipeline`` that return paths, hashes and counts."""
