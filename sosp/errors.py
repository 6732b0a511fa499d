"""Errors caused by the user's input. The CLI prints their message (which says what is wrong
and how to fix it) without a traceback; every other exception is a bug and keeps its trace."""


class SospError(Exception):
    """Base class of all user-facing errors."""


class UnknownName(SospError, KeyError):
    """An unknown model, dataset or method name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DatasetNotFound(SospError, FileNotFoundError):
    """A dataset is missing on disk; the message says where it looked and how to get it."""


class BadInput(SospError, ValueError):
    """An argument outside its valid range, or data the computation cannot use."""


class MissingExtra(SospError, ImportError):
    """An optional dependency is not installed; the message names the pip extra to install."""
