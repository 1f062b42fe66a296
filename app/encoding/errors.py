"""The one error an encoding raises: which field, which instance, why, and the fix."""

from __future__ import annotations


class EncodingError(ValueError):
    """A raw value the pipeline cannot place; the service turns it into a 4xx.

    ``suggestion`` is the known value a near miss most likely meant ("did you mean"),
    and ``allowed`` lists the accepted values where the set is closed (ordinal levels,
    or categories in strict mode), so every protocol can show them in its own shape.
    """

    def __init__(
        self,
        field: str,
        problem: str,
        index: int | None = None,
        *,
        suggestion: str | None = None,
        allowed: list[str] | None = None,
    ) -> None:
        self.field = field
        self.problem = problem
        self.index = index
        self.suggestion = suggestion
        self.allowed = allowed
        where = field if index is None else f"instances[{index}].{field}"
        super().__init__(f"{where}: {problem}")

    def at(self, index: int) -> EncodingError:
        """The same error, located at instance ``index`` of a batch."""
        return EncodingError(
            self.field, self.problem, index, suggestion=self.suggestion, allowed=self.allowed
        )
