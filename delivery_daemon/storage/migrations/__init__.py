"""Alembic migrations, run from code (no alembic.ini)."""
