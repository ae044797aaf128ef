"""Rules for fields several resources share."""

from __future__ import annotations

from parley.domain.errors import InvalidArgument, Reason

__all__ = ["MAX_DISPLAY_NAME_CHARS", "check_display_name"]

#: Longest display name of a user, agent or branch (characters); the SQL columns are 100 wide.
MAX_DISPLAY_NAME_CHARS = 100


def check_display_name(value: str, field: str, *, required: bool = False) -> str:
    """``value`` stripped; ``InvalidArgument`` naming ``field`` when it is longer than
    ``MAX_DISPLAY_NAME_CHARS``, or empty and ``required`` (MISSING_FIELD)."""
    value = value.strip()
    if required and not value:
        raise InvalidArgument.field(field, "required", reason=Reason.MISSING_FIELD)
    if len(value) > MAX_DISPLAY_NAME_CHARS:
        raise InvalidArgument.field(field, f"at most {MAX_DISPLAY_NAME_CHARS} characters")
    return value
