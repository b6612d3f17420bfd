"""The embedded default's SQLite database under concurrent writers (real processes, as `make run` has).

`make run` runs gunicorn workers (threads in each) and the gateway posts usage and heartbeats while an admin PATCHes:
several processes write var/sluice.sqlite3 at once. Every request is a transaction (ATOMIC_REQUESTS), and a typical
one reads before it writes (load the subscription, then save it). With SQLite's default deferred transactions such a
read-then-write cannot wait for a concurrent writer: SQLite answers "database is locked" at once instead of calling
the busy handler, since waiting could deadlock. The settings begin every transaction IMMEDIATE, with a busy timeout
and WAL, so writers queue instead (docs/deployment.md).

Each worker is a separate process loading the embedded default's settings (gateway_admin.settings.local) against
one file database; all are released together through their stdin once each has Django set up.
"""

import os
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing

from gateway_admin.sqlite import use_wal

WORKERS = 4
TRANSACTIONS = 40

WORKER = textwrap.dedent(
    """
    import sys

    import django
    from django.db import connection, transaction

    django.setup()
    with connection.cursor() as cursor:  # open the connection (and run the settings' init_command) before "go"
        cursor.execute("PRAGMA journal_mode")
        print("ready", cursor.fetchone()[0], flush=True)
    sys.stdin.readline()
    for _ in range(int(sys.argv[1])):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT value FROM counter WHERE id = 1")
            (value,) = cursor.fetchone()
            cursor.execute("UPDATE counter SET value = %s WHERE id = 1", [value + 1])
    print("done", flush=True)
    """
)


def _env(database: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="gateway_admin.settings.local",
        DJANGO_SECRET_KEY="sqlite-concurrency-test",
        DATABASE_URL=f"sqlite:///{database}",
    )
    return env


def test_concurrent_read_then_write_transactions_never_see_database_is_locked(tmp_path):
    database = tmp_path / "sluice.sqlite3"
    with closing(sqlite3.connect(database)) as db:
        db.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER)")
        db.execute("INSERT INTO counter VALUES (1, 0)")
        db.commit()
    env = _env(str(database))
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(TRANSACTIONS)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(WORKERS)
    ]
    try:
        ready = [worker.stdout.readline().split() for worker in workers]
        assert all(line[:1] == ["ready"] for line in ready), [w.stderr.read() for w in workers if w.poll() is not None]
        for worker in workers:  # release them together
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = [worker.communicate(timeout=60) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    errors = [stderr for _, stderr in results if "database is locked" in stderr or "Error" in stderr]
    assert not errors, errors[0]
    assert [worker.returncode for worker in workers] == [0] * WORKERS
    assert [stdout.strip() for stdout, _ in results] == ["done"] * WORKERS
    with closing(sqlite3.connect(database)) as db:
        assert db.execute("SELECT value FROM counter").fetchone() == (WORKERS * TRANSACTIONS,)  # no lost update
    # WAL: readers (the gateways' snapshot polls) never wait for a writer, nor a writer for them
    assert {line[1] for line in ready} == {"wal"}


SWITCHER = textwrap.dedent(
    """
    import sys

    import django
    from django.db import connection

    django.setup()
    print("ready", flush=True)
    for line in sys.stdin:  # a database file still in the rollback journal, given to every worker at once
        connection.close()
        connection.settings_dict["NAME"] = line.strip()
        try:
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA journal_mode")
                print(cursor.fetchone()[0], flush=True)
        except Exception as exc:
            print(type(exc).__name__, exc, flush=True)
    """
)
SWITCHERS = 8
ROUNDS = 15


def test_processes_opening_a_file_not_yet_in_wal_together_all_switch_it(tmp_path):
    """``PRAGMA journal_mode=WAL`` run by several processes at once on a rollback-journal file (the first start, a
    file copied in) failed some with "database is locked" at once, the busy timeout notwithstanding: as the settings'
    ``init_command`` about 8 % of such connections failed (``gateway_admin.sqlite``). Each round gives all workers a
    new file together; every connection must come up, in WAL."""
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", SWITCHER],
            env=_env(str(tmp_path / "unused.sqlite3")),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(SWITCHERS)
    ]
    answers = []
    try:
        assert [worker.stdout.readline() for worker in workers] == ["ready\n"] * SWITCHERS
        for round_ in range(ROUNDS):
            database = tmp_path / f"round{round_}.sqlite3"
            with closing(sqlite3.connect(database)) as db:
                db.execute("CREATE TABLE t (x INTEGER)")
                db.commit()
                assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
            for worker in workers:
                worker.stdin.write(f"{database}\n")
            for worker in workers:
                worker.stdin.flush()
            answers += [worker.stdout.readline().strip() for worker in workers]
        for worker in workers:
            worker.stdin.close()
        assert [worker.wait(timeout=60) for worker in workers] == [0] * SWITCHERS
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert [answer for answer in answers if answer != "wal"] == []
    assert len(answers) == SWITCHERS * ROUNDS


def test_a_database_that_cannot_use_wal_keeps_its_mode(tmp_path):
    """SQLite answers the unchanged mode, without an error, where WAL is impossible (in memory; a VFS without shared
    memory): the switch returns that answer instead of trying again."""
    with closing(sqlite3.connect(":memory:")) as memory:
        assert use_wal(memory) == "memory"
    url = f"file:{tmp_path / 'dotfile.sqlite3'}?vfs=unix-dotfile"
    with closing(sqlite3.connect(url, uri=True, isolation_level=None)) as dotfile:
        assert use_wal(dotfile) == "delete"
    with closing(sqlite3.connect(tmp_path / "file.sqlite3", isolation_level=None)) as plain:
        assert use_wal(plain) == "wal"
        assert use_wal(plain) == "wal"  # already in WAL: read, not switched


KEPT = textwrap.dedent(
    """
    import django
    from django.core.signals import request_finished
    from django.db import connection

    django.setup()
    connection.ensure_connection()
    first = connection.connection
    request_finished.send(sender=None)  # what the end of every request does: close_old_connections()
    print("kept" if connection.connection is first else "closed")
    """
)


def test_sqlite_connections_are_kept_between_requests_unless_the_url_says_otherwise(tmp_path):
    """Closing the last connection to the file checkpoints the WAL and deletes it: per request that cost about
    3.5 ms of CPU per usage POST (docs/benchmarks.md, fifth session, `ingest2`)."""
    database = tmp_path / "sluice.sqlite3"
    for url_option, expected in (("", "kept"), ("?conn_max_age=0", "closed")):
        env = _env(f"{database}{url_option}")
        result = subprocess.run([sys.executable, "-c", KEPT], env=env, capture_output=True, text=True, timeout=60)
        assert result.stdout.strip() == expected, result.stderr
