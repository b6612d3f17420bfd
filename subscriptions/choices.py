from django.db import models

__all__ = ("ProductStateChoices", "SubscriptionStateChoices")


class ProductStateChoices(models.TextChoices):
    NOT_PUBLISHED = "notPublished", "Not published"
    PUBLISHED = "published", "Published"


class SubscriptionStateChoices(models.TextChoices):
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"
    SUBMITTED = "submitted", "Submitted"
    REJECTED = "rejected", "Rejected"
    CANCELLED = "cancelled", "Cancelled"
    EXPIRED = "expired", "Expired"
