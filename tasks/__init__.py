"""Example pipelines for chordflow; each subpackage is one pipeline of plain @task functions."""
