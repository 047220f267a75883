"""``make bench``: chordflow side by side with raw Celery and Dask on the same machine, same run.

Entry point: ``python -m bench.run [--quick] [--repeat N] [--only NAME,...]`` (see bench/run.py).
"""
