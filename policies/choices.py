from django.db import models

__all__ = ("PolicyFormatChoices", "PolicyScopeChoices")


class PolicyScopeChoices(models.TextChoices):
    GLOBAL = "global", "Global"
    PRODUCT = "product", "Product"
    API = "api", "API"
    OPERATION = "operation", "Operation"


class PolicyFormatChoices(models.TextChoices):
    XML = "xml", "XML"
