"""``parley-server admin create``: make an admin from the shell, on the configured database."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from parley.auth.passwords import Passwords
from parley.auth.secret import install_secret
from parley.auth.tokens import Tokens
from parley.config import Settings
from parley.domain.accounts import Accounts, normalize_username
from parley.domain.errors import ParleyError
from parley.domain.models import Quota
from parley.domain.settings import RuntimeSettings, ServerSettings
from parley.storage.migrate import upgrade_database
from parley.storage.sql.engine import Database
from parley.storage.sql.server_settings import ServerSettingsStore
from parley.storage.sql.users import UserStore

__all__ = ["create_admin"]


async def create_admin(
    settings: Settings, username: str, password: Callable[[], str], display_name: str
) -> int:
    """Promote ``username`` to admin, or register them as one (``password`` is asked only then).
    Returns the exit status: 0, or 1 with the reason on stderr."""
    db = Database(settings.resolved_database_url)
    try:
        if settings.migrate_on_start:
            await asyncio.to_thread(upgrade_database, settings.resolved_database_url)
        users = UserStore(db)
        key = (
            settings.jwt_secret.get_secret_value()
            if settings.jwt_secret is not None
            else await asyncio.to_thread(install_secret, settings.data_dir)
        )
        runtime = RuntimeSettings(
            ServerSettingsStore(db), ServerSettings(settings.allow_registration, Quota())
        )
        accounts = Accounts(users, Passwords(), Tokens(settings, key), runtime)
        name = normalize_username(username)
        existing = await users.get_credentials(name)
        try:
            user = await accounts.create_admin(name, "" if existing else password(), display_name)
        except ParleyError as exc:
            print(f"parley-server: {exc.message}", file=sys.stderr)
            return 1
        print(f"{'promoted' if existing else 'created'} admin {user.username} (users/{user.id})")
        return 0
    finally:
        await db.dispose()
