"""The base of every filter set: query parameters that are not what the schema says are refused with a 400.

django-filter reads what it can and ignores the rest (`?secret=1`, `?state=`), so a client's typo silently returns
everything; the REST fuzz battery (tests/fuzz/) counts that as a contradiction of the schema.
"""

import django_filters
from django import forms
from django.db import models
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

__all__ = ("BooleanFilter", "FilterSet")

ERR_BOOLEAN = "Use true or false."
ERR_EMPTY = "Leave the parameter out rather than empty."


class StrictBooleanField(forms.Field):
    """`true` or `false`; anything else is an error (django-filter's own field ignores what it cannot read)."""

    def to_python(self, value):
        if value in (None, ""):
            return None
        if value in ("true", "false"):
            return value == "true"
        raise forms.ValidationError(ERR_BOOLEAN, code="invalid")


@extend_schema_field(OpenApiTypes.BOOL)
class BooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


class StrictFormMixin:
    """A parameter given with an empty value is an error, not "no filter"."""

    def clean(self):
        cleaned = super().clean()
        for name in self.fields:
            if name in self.data and self.data.get(name) == "":
                self.add_error(name, forms.ValidationError(ERR_EMPTY, code="blank"))
        return cleaned


class FilterSet(django_filters.FilterSet):
    FILTER_DEFAULTS = {
        **django_filters.FilterSet.FILTER_DEFAULTS,
        models.BooleanField: {"filter_class": BooleanFilter},
    }

    def get_form_class(self):
        form_class = super().get_form_class()
        return type(form_class.__name__, (StrictFormMixin, form_class), {})
