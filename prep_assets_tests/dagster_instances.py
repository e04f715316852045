"""Dagster instances for tests, built from the repo's own dagster.yaml and dagster-postgres.yaml.

PostgreSQL is the machine's server on 127.0.0.1:5432 (or PREP_TEST_PG_ADMIN_URL).
One database is created per test session and dropped at its end. Each test's
instance wipes it before use, so tests never see each other's runs or partitions.
"""

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy
from dagster import DagsterInstance
from sqlalchemy.engine import make_url

REPO_ROOT = Path(__file__).resolve().parents[1]
SQLITE_CONFIG = REPO_ROOT / "dagster.yaml"
POSTGRES_CONFIG = REPO_ROOT / "dagster-postgres.yaml"
PG_URL_VARIABLE = "PREP_DAGSTER_PG_URL"
DEFAULT_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
STORAGES = ("sqlite", "postgres")


def _admin_url() -> sqlalchemy.URL:
    url = make_url(os.environ.get("PREP_TEST_PG_ADMIN_URL", DEFAULT_ADMIN_URL))
    host = url.host or ""
    if not (host == "localhost" or host.startswith("127.")):
        raise RuntimeError(
            f"PREP_TEST_PG_ADMIN_URL points at {host!r}: tests use only a PostgreSQL server "
            "on 127.0.0.0/8"
        )
    return url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database for this session, dropped when the session ends."""
    admin = _admin_url()
    name = f"prep_test_{secrets.token_hex(4)}"
    engine = sqlalchemy.create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.OperationalError as error:
        engine.dispose()
        raise RuntimeError(
            f"cannot create a test database on {admin.render_as_string(hide_password=True)}: "
            f"{error.orig}; start PostgreSQL or set PREP_TEST_PG_ADMIN_URL"
        ) from error
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def _instance_home(home: Path, config: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config, home / "dagster.yaml")
    return home


@pytest.fixture
def make_instance(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str, Path], DagsterInstance]]:
    """Return a factory of instances of the named storage ("sqlite" or "postgres") in a folder."""
    created: list[DagsterInstance] = []

    def make(storage: str, home: Path) -> DagsterInstance:
        if storage == "sqlite":
            instance = DagsterInstance.from_config(str(_instance_home(home, SQLITE_CONFIG)))
        elif storage == "postgres":
            url = request.getfixturevalue("postgres_url")
            monkeypatch.setenv(PG_URL_VARIABLE, url)
            instance = DagsterInstance.from_config(str(_instance_home(home, POSTGRES_CONFIG)))
            # The database lives for the session: start each test from an empty one.
            instance.wipe()
        else:
            raise ValueError(f"unknown storage {storage!r}: expected one of {STORAGES}")
        created.append(instance)
        return instance

    yield make
    for instance in created:
        instance.dispose()
