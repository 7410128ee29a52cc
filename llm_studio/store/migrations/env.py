"""Alembic environment: runs migrations on the connection handed over by `upgrade_database`.

There is no alembic.ini: `database.alembic_config()` builds the Config in code and puts an open
connection (already inside a BEGIN IMMEDIATE transaction) in `config.attributes["connection"]`, so the
migrations and their bookkeeping (alembic_version) commit or roll back together.
"""

from __future__ import annotations

from alembic import context

from llm_studio.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("llm_studio migrations run only through llm_studio.store.database.upgrade_database()")

# render_as_batch: SQLite cannot ALTER most things; batch mode rebuilds the table instead.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
