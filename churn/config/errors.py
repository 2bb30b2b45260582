"""The one error type of the config layer."""


class ConfigError(ValueError):
    """A job or cluster spec (or an input it names) that cannot be used; the message names the key or path."""
