"""Stand-ins for the usage sinks' peers, for tests that need no network."""

from gateway.usage.journal import encode
from gateway.usage.record import UsageRecord
from gateway.usage.sinks import BufferedSink


class RecordSink(BufferedSink[UsageRecord]):
    """A sink that buffers the records themselves and hands ``_deliver`` lists of records (the product's sinks
    buffer their lines): a test reads what was delivered without decoding it. Subclasses define ``_deliver``."""

    def _entry(self, record: UsageRecord, line: bytes | None) -> UsageRecord:
        return record

    def _encode(self, entries: list[UsageRecord]) -> bytes:
        return encode(entries)

    def _entries(self, records: list[UsageRecord]) -> list[UsageRecord]:
        return records
