"""Alembic migrations of the store, applied programmatically by `llm_studio.store.database.upgrade_database`."""
