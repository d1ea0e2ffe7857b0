"""Typed errors. Library code raises these; only the CLI turns them into exit codes.

Every message should say what went wrong *and* what to do about it.
"""


class DevsError(Exception):
    """Base class of every error devs raises on purpose."""


class UnknownNameError(DevsError, KeyError):
    """A dataset, method, model or protocol name that is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class DatasetError(DevsError):
    """A dataset is missing, corrupt, or not in a layout devs can read."""


class ChecksumError(DatasetError):
    """A downloaded or local archive does not match its pinned checksum."""


class InvalidParameterError(DevsError, ValueError):
    """A method or protocol parameter has a bad value."""


def check_choice(name: str, value: object, choices: tuple[str, ...], note: str = "") -> None:
    """An InvalidParameterError naming the valid ``choices`` (and ``note``, why they differ) unless ``value`` is one."""
    if value not in choices:
        raise InvalidParameterError(f"Unknown {name} {value!r}. Valid: {', '.join(choices)}"
                                    + (f" ({note})." if note else "."))


class DistilledFileError(DevsError):
    """A distilled-set file is missing, truncated, or not in the devs.distilled.v1 format."""


class OutputError(DevsError):
    """An output path cannot be written."""


class ReportError(DevsError):
    """devs report found nothing it can show in its inputs."""
