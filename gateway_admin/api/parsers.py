"""Request parsers for the REST API."""

import io

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import parsers

__all__ = ("JSONParser",)


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with Django's body size limit.

    DRF reads the request stream directly, which skips the DATA_UPLOAD_MAX_MEMORY_SIZE check Django makes in
    `HttpRequest.body`; this parser reads at most limit + 1 bytes and raises `RequestDataTooBig`, which the
    exception handler answers with 413.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and stream is not None:
            body = stream.read(limit + 1)
            if len(body) > limit:
                raise RequestDataTooBig("Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE.")
            stream = io.BytesIO(body)
        return super().parse(stream, media_type, parser_context)
