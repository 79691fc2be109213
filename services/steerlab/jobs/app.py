"""The Celery app for ``celery -A steerlab.jobs.app worker``, configured from the environment
(``STEERLAB_DATABASE_URL``, ``STEERLAB_BROKER_URL`` and the ``STEERLAB_JOB_*`` settings of
:class:`~steerlab.jobs.worker.WorkerSettings`). ``steerlab worker`` runs the same app."""

from .worker import WorkerSettings, worker_app

app = worker_app(WorkerSettings.from_env())
