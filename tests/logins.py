"""LOGIN roles for tests: real, non-superuser logins that are members of agent-builder's group
roles (or of none). Roles are cluster-wide and other test runs may share the server, so every
login has a unique name and is dropped when its test ends."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from tests.pg import with_user

GROUPS = {
    "builder": "agent_builder_builder",
    "operator": "agent_builder_operator",
    "admin": "agent_builder_admin",
}


@dataclass(frozen=True)
class Login:
    name: str
    url: str  # the test database, as this login


@dataclass
class Logins:
    """Makes logins for one test database; `drop()` removes every one it made."""

    db_url: str  # the test database, as its (superuser) admin
    made: list[str] = field(default_factory=list)

    def make(self, *groups: str, label: str = "login") -> Login:
        """A LOGIN role in the given groups ('builder', 'operator', 'admin'; none: it may only connect)."""
        name = f"ab_{label}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
            self.made.append(name)
            for group in groups:
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(GROUPS[group]), sql.Identifier(name)))
        return Login(name=name, url=with_user(self.db_url, name))

    def drop(self) -> None:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            for name in self.made:
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))  # privileges in this database
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
        self.made.clear()
