"""What every tool kind hands back to the tool loop."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ToolOutcome"]


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """A tool's result, as the model sees it in the ``tool`` turn.

    ``output`` is text (a JSON document, prose, whatever the tool answered). Failures are
    outcomes too, never exceptions: a tool that is down, refused by the SSRF guard, too slow,
    too large or given malformed arguments yields ``ToolOutcome("<what went wrong>",
    is_error=True)``, so the model can say so or try something else.
    """

    output: str
    is_error: bool = False

    @classmethod
    def failure(cls, message: str) -> ToolOutcome:
        """``ToolOutcome(message, is_error=True)``."""
        return cls(message, is_error=True)
