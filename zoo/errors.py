"""The exceptions and warnings zoo raises for problems a user can fix."""

from __future__ import annotations

__all__ = [
    "AmbiguousName",
    "DataWarning",
    "DatasetNotFound",
    "PluginWarning",
    "SettingError",
    "UnknownName",
    "ZooError",
    "describe",
]


def describe(exc: BaseException) -> str:
    """An exception on one line, with its type: ``ModuleNotFoundError: No module named 'x'``."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ZooError(Exception):
    """A problem with the user's input or environment; the message says how to fix it."""


class SettingError(ZooError):
    """A setting has a value it cannot take: a keyword argument in Python, the option of the same name on the
    command line, where the message names ``--the-option`` instead."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting} {problem}")
        self.setting, self.problem = setting, problem

    @property
    def option_message(self) -> str:
        return f"--{self.setting.replace('_', '-')} {self.problem}"


class UnknownName(ZooError, LookupError):
    """No registered architecture or data set matches a name."""


class AmbiguousName(ZooError, LookupError):
    """A short name matches more than one registered name."""


class DatasetNotFound(ZooError):
    """A data set's files are missing and could not be downloaded."""


class PluginWarning(UserWarning):
    """A plugin failed to load, or registered a name another plugin already has."""


class DataWarning(UserWarning):
    """Data zoo could not use: images it could not read (skipped), a manifest it could not check a file against."""
