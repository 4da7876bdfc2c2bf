"""Exceptions a user can cause, printed as one line by the CLI with exit status 2."""


class UserError(Exception):
    """An error the user can fix: bad config, missing data or weights, unknown layer.

    The message is one line that names the file, key or path and says what to do next.
    The CLI prints it without a traceback and exits with status 2.
    """


class ConfigError(UserError):
    """The workflow file is invalid: unknown key, wrong type, missing required value."""
