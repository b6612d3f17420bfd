from django.db import models

__all__ = ("PolicyContentFormatChoices", "PolicyFormatChoices", "PolicyScopeChoices")


class PolicyScopeChoices(models.TextChoices):
    GLOBAL = "global", "Global"
    PRODUCT = "product", "Product"
    API = "api", "API"
    OPERATION = "operation", "Operation"


class PolicyFormatChoices(models.TextChoices):
    XML = "xml", "XML"


class PolicyContentFormatChoices(models.TextChoices):
    """Formats a document may be written and read in (APIM's `format`); it is always stored as `xml`."""

    XML = "xml", "XML (well-formed; quotes in expressions escaped as &quot;)"
    RAWXML = "rawxml", "Raw XML (expressions as written in the APIM portal)"
