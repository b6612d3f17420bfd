from django.db import models

__all__ = ("APITypeChoices", "HttpMethodChoices")


class APITypeChoices(models.TextChoices):
    OPENAI = "openai", "OpenAI-compatible"
    PASSTHROUGH = "passthrough", "Passthrough"


class HttpMethodChoices(models.TextChoices):
    GET = "GET", "GET"
    POST = "POST", "POST"
    PUT = "PUT", "PUT"
    PATCH = "PATCH", "PATCH"
    DELETE = "DELETE", "DELETE"
    HEAD = "HEAD", "HEAD"
    OPTIONS = "OPTIONS", "OPTIONS"
    TRACE = "TRACE", "TRACE"
