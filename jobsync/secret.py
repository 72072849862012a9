"""The API token, kept out of every repr, log line and error message."""

from __future__ import annotations


class ApiToken:
    """Wraps the bearer token so that printing or logging it shows only `***`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        value = value.strip()
        if not value:
            raise ValueError("the API token is empty")
        if any(ord(char) < 0x21 or ord(char) == 0x7F for char in value):
            # Never quote it: the message would carry the secret.
            raise ValueError("the API token holds spaces, line breaks or control characters")
        self._value = value

    def reveal(self) -> str:
        """The token itself, for the Authorization header and nothing else."""
        return self._value

    def redact(self, text: str) -> str:
        """`text` with every occurrence of the token replaced by `***`."""
        return text.replace(self._value, "***")

    def __repr__(self) -> str:
        return "ApiToken('***')"

    __str__ = __repr__
