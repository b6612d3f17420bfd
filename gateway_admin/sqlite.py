"""The embedded default's SQLite file in the WAL journal, switched on without the first start's race.

WAL is a property of the database file: once one connection has switched it, every later connection finds it so and
the switch is a no-op. The switch itself is the risky moment. ``PRAGMA journal_mode=WAL`` reads the file's header
and then upgrades its read to a write to rewrite it; when several processes open a file still in the rollback
journal at the same moment (the test of concurrent writers; a database file copied in from elsewhere), the ones that
lose the upgrade get "database is locked" at once: SQLite does not call the busy handler for a read that becomes a
write, since waiting could deadlock. Run as a connection's ``init_command`` that error failed the connection.

So each new connection (``connection_created``) asks for the journal mode first, a plain read that waits through the
busy handler, and switches only when the file is not yet in WAL. A connection that lost the race waits for the
winner's write lock to go (``BEGIN IMMEDIATE``, which does wait through the busy handler) and switches again: the
file is in WAL by then, so that is a no-op. Retried at once instead, the loser spun hundreds to thousands of times
while the winner switched.
"""

import sqlite3

__all__ = ("on_connection_created", "use_wal")


def use_wal(connection: sqlite3.Connection) -> str:
    """Put the connection's database file in the WAL journal; return the journal mode SQLite answers.

    That is ``"wal"`` for a file database; a database that cannot use WAL keeps its mode and answers it (``"memory"``
    in memory; the old mode with a VFS without shared memory). Waiting for another connection's switch is bounded by
    the connection's busy timeout, past which "database is locked" is raised.
    """
    mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    if mode == "wal":
        return mode
    while True:
        try:
            return connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
        # Lost the race to a connection that is switching the file now: wait for its write lock through the busy
        # handler (BEGIN IMMEDIATE calls it), then switch again (a no-op on the file now in WAL).
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")


def on_connection_created(sender, connection, **kwargs):
    """``connection_created`` receiver: every SQLite connection of the management plane uses the WAL journal."""
    if connection.vendor != "sqlite":
        return
    use_wal(connection.connection)
