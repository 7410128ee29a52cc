"""Migration scripts, oldest first (0001_initial.py, 0002_...). Alembic loads them by path."""
