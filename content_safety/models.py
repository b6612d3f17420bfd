"""Content-safety blocklists: named lists of exact terms and regexes that ``llm-content-safety`` blocks on
(``<blocklists><id>name</id></blocklists>``), evaluated by the gateways from the snapshot (docs/content-safety.md)."""

from django.db import models

from gateway_admin.models import ConfigurationModel
from gateway_admin.validators import validate_resource_name

__all__ = ("Blocklist",)


class Blocklist(ConfigurationModel):
    """Terms (whole words, after NFKC and case folding) and RE2 regular expressions; any match blocks."""

    MAX_ITEMS = 10_000

    name = models.CharField(
        verbose_name="name",
        max_length=80,
        validators=[validate_resource_name],
    )
    description = models.TextField(
        verbose_name="description",
        blank=True,
        max_length=2000,
    )
    items = models.JSONField(
        verbose_name="items",
        default=list,
        blank=True,
        help_text='[{"kind": "term" | "regex", "value": "..."}, ...]',
    )

    class Meta:
        ordering = ("name",)
        verbose_name = "blocklist"
        verbose_name_plural = "blocklists"
        constraints = [
            models.UniqueConstraint(fields=["name"], name="%(app_label)s_%(class)s_unique_name"),
        ]

    def __str__(self):
        return self.name

    def item_count(self) -> int:
        return len(self.items or ())

    def term_list(self) -> str:
        return ", ".join(item["value"] for item in self.items or () if item.get("kind") == "term") or "—"

    def regex_list(self) -> str:
        return "  ".join(item["value"] for item in self.items or () if item.get("kind") == "regex") or "—"
