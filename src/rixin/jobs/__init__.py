"""Background jobs: a durable queue (``queue``) and an in-process worker pool (``worker``)."""

from rixin.jobs.queue import Job, JobQueue
from rixin.jobs.worker import Handler, JobContext, PermanentJobError, WorkerPool

__all__ = ["Handler", "Job", "JobContext", "JobQueue", "PermanentJobError", "WorkerPool"]
