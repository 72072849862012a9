"""jobsync: a permanent, queryable archive of integrator.io jobs."""

__version__ = "0.1.0"
