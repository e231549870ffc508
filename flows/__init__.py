"""Prefect flows and the ``cycleaug`` command line: compose the tasks into the pipeline."""
