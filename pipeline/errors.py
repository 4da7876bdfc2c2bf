"""Exceptions the CLI prints as one line, without a traceback.

A :class:`UserError` is a mistake in what the user asked for (exit status 2); a
:class:`StageFailure` is the machine refusing (a full disk, a permission, an I/O error) while a
stage runs (exit status 1). Neither loses finished work: stamps are written only after outputs.
"""


class UserError(Exception):
    """An error the user can fix: bad config, missing data or weights, unknown layer.

    The message is one line that names the file, key or path and says what to do next.
    The CLI prints it without a traceback and exits with status 2.
    """


class ConfigError(UserError):
    """The workflow file is invalid: unknown key, wrong type, missing required value."""


class StageFailure(Exception):
    """A stage stopped on an operating-system error (no space, no permission, I/O).

    Not a config mistake, so the CLI exits with status 1; the message names the stage, the path
    and the cause. Nothing is stamped, so the rerun after fixing the cause does the stage again.
    """


def describe_os_error(error: OSError, fallback: object) -> tuple[str, str]:
    """(the path, the cause) of an OS error in words; ``fallback`` is the path to name when the
    error carries none (pyarrow's and zarr's do not)."""
    import errno as errnos
    import os

    path = error.filename if error.filename is not None else fallback
    number = error.errno
    if number is None:  # e.g. pyarrow: "[Errno 28] Error writing bytes ... No space left on device"
        text = str(error)
        number = next((code for code in (errnos.ENOSPC, errnos.EDQUOT, errnos.EFBIG,
                                          errnos.EACCES, errnos.EROFS, errnos.EIO)
                       if os.strerror(code) in text), None)
    cause = os.strerror(number) if number is not None else (
        error.strerror or " ".join(str(error).split()) or type(error).__name__)
    return str(path), cause


def system_refusal(error: BaseException) -> OSError | None:
    """The OS error behind ``error``: itself, or one in its cause/context chain that says the
    machine refused (no space, quota, file too large, read-only, I/O, permission). Libraries
    wrap it (torch raises a RuntimeError with the OSError as context)."""
    import errno as errnos

    refusals = {errnos.ENOSPC, errnos.EDQUOT, errnos.EFBIG, errnos.EROFS, errnos.EIO,
                errnos.EACCES, errnos.EPERM}
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and (current is error or current.errno in refusals):
            return current
        current = current.__cause__ or current.__context__
    return None


def one_line(error: BaseException, limit: int = 160) -> str:
    """``error`` as "Type: message" on one line, cut at a word before ``limit`` characters
    (torch's explanations run to paragraphs): the cause part of a one-line refusal."""
    text = " ".join(str(error).split())
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
