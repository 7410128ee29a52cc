"""The SQLite connection, its per-connection settings, managed sessions and automatic migrations.

Several processes (UI, scheduler, training workers) share one database file, so:
- every connection sets `foreign_keys=ON` and a 30 s busy timeout; WAL mode is set once, at creation,
  so readers never block the writer;
- write transactions start with `BEGIN IMMEDIATE`: they take the write lock up front and wait for it
  (busy timeout) instead of failing with "database is locked" when a read lock cannot be upgraded;
- migrations run under an exclusive file lock next to the database, so processes that open a new or
  old database at the same moment upgrade it exactly once. An existing database is first copied to
  `<db>.bak-<revision>`; a database newer than the code is refused.

Developers add a migration with (no alembic.ini needed):
    python -c "from alembic import command; from llm_studio.store.database import alembic_config; \
command.revision(alembic_config(), 'what changed', rev_id='0002', autogenerate=False)"
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import URL, Engine, create_engine, event, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from llm_studio import paths
from llm_studio.errors import LLMStudioError, NotFoundError, StoreError
from llm_studio.store.models import Experiment

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_S = 30.0
_T = TypeVar("_T", bound="StoreBase")

# A forked child must not reuse its parent's SQLite connections: drop them from the pools (without
# closing them, which would disturb the parent) so the child opens its own.
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: [engine.dispose(close=False) for engine in list(_ENGINES)])


def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # Hand transaction control to SQLAlchemy's "begin" event below (the driver's own BEGIN is deferred
    # and skipped for DDL, which would break transactional migrations and write locking).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; avoids an fsync per metric batch
    cursor.close()


def _on_begin(conn: Any) -> None:
    mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def create_store_engine(db_path: Path) -> Engine:
    """An engine on `db_path` with the per-connection settings above."""
    engine = create_engine(
        URL.create("sqlite", database=str(db_path)),
        connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
    )
    event.listen(engine, "connect", _on_connect)
    event.listen(engine, "begin", _on_begin)
    _ENGINES.add(engine)
    return engine


def alembic_config(script_location: Path | None = None) -> Config:
    """Alembic's Config built in code (no alembic.ini)."""
    from alembic.config import Config  # alembic is imported only when a Store opens

    config = Config()
    config.set_main_option("script_location", str(script_location or MIGRATIONS_DIR))
    return config


def _state(engine: Engine) -> tuple[str | None, str]:
    """(alembic revision or None, journal mode) of the database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        revision = MigrationContext.configure(conn).get_current_revision()
        journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    return revision, str(journal).lower()


def _refuse_unknown(script: ScriptDirectory, revision: str | None, db_path: Path) -> None:
    known = {s.revision for s in script.walk_revisions()}
    if revision is not None and revision not in known:
        raise StoreError(
            f"database {db_path} is at schema revision {revision!r}, which this version of LLM Studio does not "
            f"know (its newest is {script.get_current_head()!r}): it was written by a newer LLM Studio. "
            "Upgrade LLM Studio, or point LLM_STUDIO_HOME to another workspace."
        )


def _backup(db_path: Path, revision: str) -> Path:
    """Copy the database (WAL content included, via SQLite's backup API) to <db>.bak-<revision>."""
    target = db_path.with_name(f"{db_path.name}.bak-{revision}")
    tmp = target.with_name(target.name + ".tmp")
    tmp.unlink(missing_ok=True)
    src = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_S)
    try:
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    os.replace(tmp, target)
    return target


def upgrade_database(engine: Engine, db_path: Path, script_location: Path | None = None) -> None:
    """Bring the database to the newest schema; a no-op (no lock taken) when it already is."""
    from alembic import command
    from alembic.script import ScriptDirectory

    config = alembic_config(script_location)
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    try:
        revision, journal = _state(engine)
        _refuse_unknown(script, revision, db_path)
        if revision == head and journal == "wal":
            return
        lock_path = db_path.with_name(db_path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even if we crash
            # Another process may have upgraded while we waited: look again under the lock.
            with engine.connect() as conn:
                conn.connection.driver_connection.execute("PRAGMA journal_mode=WAL")  # outside any transaction
            revision, _ = _state(engine)
            _refuse_unknown(script, revision, db_path)
            if revision == head:
                return
            if revision is not None:
                _backup(db_path, revision)
            # One transaction for all steps and their alembic_version bookkeeping.
            with engine.execution_options(sqlite_begin="IMMEDIATE").begin() as conn:
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
    except LLMStudioError:
        raise
    except (SQLAlchemyError, sqlite3.Error, OSError) as e:
        raise StoreError(f"could not open or upgrade database {db_path}: {e}") from e


class StoreBase:
    """Owns the engine; gives each operation one managed session (commit, or roll back and raise)."""

    def __init__(self, db_path: str | Path | None = None) -> None:
        self.path = Path(db_path).expanduser().resolve() if db_path else paths.db_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the folder of database {self.path}: {e}") from e
        self._engine = create_store_engine(self.path)
        try:
            upgrade_database(self._engine, self.path)
        except BaseException:
            self._engine.dispose()
            raise
        self._reads = sessionmaker(self._engine, expire_on_commit=False)
        self._writes = sessionmaker(self._engine.execution_options(sqlite_begin="IMMEDIATE"), expire_on_commit=False)

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        """One unit of work. `write=True` takes the write lock at BEGIN (waits up to the busy timeout)."""
        session = (self._writes if write else self._reads)()
        try:
            yield session
            session.commit()
        except LLMStudioError:
            session.rollback()
            raise
        except (SQLAlchemyError, sqlite3.Error) as e:
            session.rollback()
            raise StoreError(f"database error ({self.path}): {getattr(e, 'orig', None) or e}") from e
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @staticmethod
    def _experiment(session: Session, name: str) -> Experiment:
        row = session.scalars(select(Experiment).where(Experiment.name == name)).one_or_none()
        if row is None:
            raise NotFoundError(f"experiment {name!r} does not exist")
        return row

    def close(self) -> None:
        """Close pooled connections (the Store is unusable afterwards)."""
        self._engine.dispose()

    def __enter__(self: _T) -> _T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"
