"""Everything that runs inside a Celery worker process."""
