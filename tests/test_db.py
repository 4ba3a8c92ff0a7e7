"""Engine creation: the driver for a plain ``postgresql://`` URL, and SQLite files created private."""

from __future__ import annotations

from delivery_daemon.db import create_db_engine, with_driver


def test_plain_postgresql_url_uses_psycopg_3() -> None:
    """``database.url: postgresql://…`` (the form sellers copy) gets psycopg 3, not SQLAlchemy's psycopg2 default,
    which is not installed; the password survives the rewrite."""
    engine = create_db_engine("postgresql://delivery:s3cr%40t@127.0.0.1:5/shop")  # no connection is made yet
    assert engine.dialect.driver == "psycopg"
    assert engine.url.password == "s3cr@t" and engine.url.database == "shop"


def test_other_urls_are_left_alone() -> None:
    """An explicit driver and SQLite URLs pass through unchanged."""
    for url in ("postgresql+psycopg://u:p@h/d", "sqlite:///x.db", "sqlite://"):
        assert with_driver(url) == url
