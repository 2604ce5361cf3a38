"""Domain errors raised by services; views turn them into messages, never into a 500."""


class DomainError(Exception):
    """A business rule refused the operation; the message is meant for the user."""

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems or [message]

    def __str__(self) -> str:
        return self.message
