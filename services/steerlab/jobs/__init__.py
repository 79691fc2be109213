"""Extraction jobs: Celery workers turn contrastive datasets into registered vector sets.

- ``spec``: what a job extracts, checked before it is queued;
- ``store``: the job records (PostgreSQL or SQLite), claims and leases;
- ``worker``: the Celery app and task, and what a worker does with a job; ``app`` for ``celery -A``;
- ``service`` / ``server`` / ``cli``: ``steerlab.v1.JobService``, the lease monitor and metrics,
  ``steerlab jobs ...`` and ``steerlab worker``.
"""
