"""Named values: instance-wide name/value pairs referenced as `{{name}}` from policies and backends."""

from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

from gateway_admin.models import ConfigurationModel

from . import crypto

__all__ = ("NamedValue",)

validate_named_value_name = RegexValidator(
    regex=r"^(?!\.+$)[A-Za-z0-9\-._]+$",
    message="Use letters, digits, '-', '.' and '_' (APIM display name rules).",
    code="invalid_name",
)


class NamedValue(ConfigurationModel):
    """A name/value pair; a secret value is stored only encrypted (`encrypted_value`), a plain one as is."""

    MAX_VALUE_LENGTH = 4096

    name = models.CharField(
        verbose_name="name",
        max_length=256,
        validators=[validate_named_value_name],
    )
    secret = models.BooleanField(
        verbose_name="secret",
        default=False,
    )
    plain_value = models.TextField(
        verbose_name="plain value",
        blank=True,
        help_text="The value when the named value is not secret; empty for secrets.",
    )
    encrypted_value = models.TextField(
        verbose_name="encrypted value",
        blank=True,
        help_text="Fernet token of the value under SLUICE_SECRET_KEYS when the named value is secret.",
    )
    tags = models.JSONField(
        verbose_name="tags",
        default=list,
        blank=True,
    )

    class Meta:
        ordering = ("name",)
        verbose_name = "named value"
        verbose_name_plural = "named values"
        permissions = [("reveal_namedvalue", "Can reveal the value of a named value (list-value)")]
        constraints = [
            models.UniqueConstraint(fields=["name"], name="%(app_label)s_%(class)s_unique_name"),
            # A secret row never carries plaintext; a plain row never carries ciphertext.
            models.CheckConstraint(
                condition=Q(secret=True, plain_value="") | Q(secret=False, encrypted_value=""),
                name="%(app_label)s_%(class)s_one_value_column",
            ),
        ]

    def __str__(self):
        return self.name

    @property
    def value(self) -> str:
        """The plaintext value (decrypted for secrets)."""
        return crypto.decrypt(self.encrypted_value) if self.secret else self.plain_value

    def set_value(self, value: str, *, secret: bool | None = None) -> None:
        """Store `value` in the column that matches `secret` (default: the current flag)."""
        if secret is not None:
            self.secret = secret
        if self.secret:
            self.encrypted_value, self.plain_value = crypto.encrypt(value), ""
        else:
            self.plain_value, self.encrypted_value = value, ""
