from django.db import models

__all__ = ("UsageGroupByChoices", "UsageIntervalChoices")


class UsageGroupByChoices(models.TextChoices):
    API = "api", "API"
    SUBSCRIPTION = "subscription", "Subscription"
    PRODUCT = "product", "Product"
    OPERATION = "operation", "Operation"


class UsageIntervalChoices(models.TextChoices):
    MINUTE = "minute", "Minute"
    HOUR = "hour", "Hour"
    DAY = "day", "Day"
