"""The one error an encoding raises: which field, which instance, and why."""

from __future__ import annotations


class EncodingError(ValueError):
    """A raw value the pipeline cannot place; the service turns it into a 4xx."""

    def __init__(self, field: str, problem: str, index: int | None = None) -> None:
        self.field = field
        self.problem = problem
        self.index = index
        where = field if index is None else f"instances[{index}].{field}"
        super().__init__(f"{where}: {problem}")

    def at(self, index: int) -> EncodingError:
        """The same error, located at instance ``index`` of a batch."""
        return EncodingError(self.field, self.problem, index)
