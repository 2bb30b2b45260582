"""The one error type of the clusters layer."""


class ClusterError(RuntimeError):
    """The cluster could not be started or reached."""
