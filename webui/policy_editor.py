"""The policy editor of one scope (global, product, API, operation): the XML in the Ace code editor (from the
`django-ace` package), validation by the same `policies.services.validate_policy` as `PUT .../policy/` (messages
name the line and column, and the editor marks the line), a diff against the saved document before saving, and the
effective policy (`policies.services.effective_policy`, `<base/>` expanded) of an operation."""

import difflib
import re

from django import forms
from django.contrib import messages
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect
from django_ace import AceWidget

from apis.models import API, Operation
from gateway_admin.safety import validated_write
from policies.choices import PolicyScopeChoices
from policies.services import (
    DEFAULT_GLOBAL_POLICY,
    effective_policy,
    get_policy,
    render_policy,
    set_policy,
    validate_policy,
)
from subscriptions.models import Product

from .errors import REFUSALS, add_errors, refusal_errors
from .views import UIView

__all__ = ("PolicyEditorView", "error_lines", "policy_diff")

# a new document inherits every section from the scope above
NEW_DOCUMENT = """<policies>
    <inbound>
        <base />
    </inbound>
    <backend>
        <base />
    </backend>
    <outbound>
        <base />
    </outbound>
    <on-error>
        <base />
    </on-error>
</policies>
"""
_LINE = re.compile(r"\bline (\d+)(?:, column (\d+))?")
READ = ("policies.view_policy",)
WRITE = ("policies.view_policy", "policies.add_policy", "policies.change_policy")


class PolicyForm(forms.Form):
    value = forms.CharField(
        label="Policy document (XML)",
        strip=False,
        widget=AceWidget(
            mode="xml",
            theme="chrome",
            width="100%",
            height="28rem",
            showprintmargin=False,
            toolbar=False,
            useworker=False,
        ),
    )


def error_lines(messages_: list[str]) -> list[dict]:
    """The line (and column) each validation message names, for the editor's gutter marks."""
    marks = []
    for text in messages_:
        match = _LINE.search(text)
        if match:
            marks.append({"row": int(match.group(1)) - 1, "column": int(match.group(2) or 1) - 1, "text": text})
    return marks


def policy_diff(saved: str, new: str, scope_label: str) -> str:
    """A unified diff of the saved document and the new one ("" when they are the same)."""
    return "".join(
        difflib.unified_diff(
            saved.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"{scope_label} (saved)",
            tofile=f"{scope_label} (new)",
        )
    )


class PolicyEditorView(UIView):
    template_name = "webui/policy_editor.html"

    def get_permission_required(self):
        return READ if self.request.method == "GET" else WRITE

    def setup(self, request, *args, **kwargs):
        super().setup(request, *args, **kwargs)
        self.scope = kwargs["scope"]
        if self.scope not in PolicyScopeChoices.values:
            raise Http404("No such scope.")

    def get_owner(self):
        kwargs = self.kwargs
        if self.scope == PolicyScopeChoices.GLOBAL:
            return None
        if self.scope == PolicyScopeChoices.API:
            return get_object_or_404(API.objects.prefetch_related("operations"), name=kwargs["name"])
        if self.scope == PolicyScopeChoices.PRODUCT:
            return get_object_or_404(Product, name=kwargs["name"])
        return get_object_or_404(Operation.objects.select_related("api"), api__name=kwargs["api"], name=kwargs["name"])

    def label(self, owner) -> str:
        if owner is None:
            return "global"
        if self.scope == PolicyScopeChoices.OPERATION:
            return f"operation {owner.api.name}/{owner.name}"
        return f"{self.scope} {owner.name}"

    def saved(self, owner) -> str | None:
        policy = get_policy(self.scope, owner)
        if policy is not None:
            return policy.value
        return DEFAULT_GLOBAL_POLICY if self.scope == PolicyScopeChoices.GLOBAL else None

    def get_context_data(self, owner=None, **kwargs):
        saved = self.saved(owner)
        kwargs.setdefault("form", PolicyForm(initial={"value": saved or NEW_DOCUMENT}))
        user = self.request.user
        return super().get_context_data(
            scope=self.scope,
            owner=owner,
            scope_label=self.label(owner),
            saved=saved,
            can_write=user.has_perms(WRITE),
            effective=self.effective(owner),
            **kwargs,
        )

    def effective(self, owner) -> dict | None:
        """The effective policy of the operation (operation scope) or of the chosen operation (API scope)."""
        if self.scope == PolicyScopeChoices.OPERATION:
            operation, operations = owner, None
        elif self.scope == PolicyScopeChoices.API:
            operations = sorted(owner.operations.all(), key=lambda op: op.name)
            chosen = self.request.GET.get("operation")
            operation = next((op for op in operations if op.name == chosen), operations[0] if operations else None)
        else:
            return None
        if operation is None:
            return {"operations": operations, "operation": None, "xml": None, "error": None}
        try:
            xml, error = render_policy(effective_policy(operation)), None
        except REFUSALS as exc:
            xml, error = None, " ".join(m for ms in refusal_errors(exc).values() for m in ms)
        return {"operations": operations, "operation": operation, "xml": xml, "error": error}

    def get(self, request, *args, **kwargs):
        return self.render_to_response(self.get_context_data(owner=self.get_owner()))

    def post(self, request, *args, **kwargs):
        owner = self.get_owner()
        form = PolicyForm(request.POST)
        context: dict = {"form": form}
        if form.is_valid():
            value = form.cleaned_data["value"]
            if request.POST.get("action") == "save":
                try:
                    with validated_write():
                        set_policy(self.scope, owner, value)
                except REFUSALS as exc:
                    add_errors(form, refusal_errors(exc), {"detail": "value", "policy": "value"})
                else:
                    messages.success(request, f"Saved the {self.label(owner)} policy.")
                    return redirect(request.get_full_path())
            else:  # review: validate, then show the diff and ask to save
                try:
                    validate_policy(value, self.scope)
                except REFUSALS as exc:
                    add_errors(form, refusal_errors(exc), {"detail": "value"})
                else:
                    context["diff"] = policy_diff(self.saved(owner) or "", value, self.label(owner))
                    context["reviewed"] = True
        if form.errors:
            context["marks"] = error_lines(form.errors.get("value", []))
        status = 400 if form.errors else 200
        return self.render_to_response(self.get_context_data(owner=owner, **context), status=status)
