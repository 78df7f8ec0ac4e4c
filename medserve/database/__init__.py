"""The shared database: engine set-up, UTC time columns, Alembic migrations, bounded calls from
request handlers, and retention.

`medserve db upgrade` (or `python -m medserve.database upgrade` in the image, the chart's hook
Job) migrates; services only check that the schema is the one their release expects.
"""
