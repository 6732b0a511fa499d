"""Errors caused by the user's input. The CLI prints their message (which says what is wrong
and how to fix it) without a traceback; every other exception is a bug and keeps its trace."""


def one_line(message: str) -> str:
    """`message` as the one line the user sees. An error raised in a DataLoader worker comes
    back re-created with torch's "Caught X in DataLoader worker process N. Original
    Traceback ..." around it; its last line, `module.X: message`, holds the message."""
    lines = message.strip().splitlines()
    if len(lines) > 1 and lines[0].startswith("Caught ") and "Traceback" in message:
        return lines[-1].split(": ", 1)[-1]
    return message


class SospError(Exception):
    """Base class of all user-facing errors."""

    def __str__(self) -> str:
        return one_line(super().__str__())


class UnknownName(SospError, KeyError):
    """An unknown model, dataset or method name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return one_line(str(self.args[0]))


class DatasetNotFound(SospError, FileNotFoundError):
    """A dataset is missing on disk; the message says where it looked and how to get it."""


class BadInput(SospError, ValueError):
    """An argument outside its valid range, or data the computation cannot use."""


class MissingExtra(SospError, ImportError):
    """An optional dependency is not installed; the message names the pip extra to install."""
