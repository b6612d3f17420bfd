"""Who may call the REST API: Django's model permissions, plus explicit ones where a URL's model is not the point.

See docs/permissions.md for the permissions each endpoint needs and the two groups shipped by default.
"""

from rest_framework.permissions import DjangoModelPermissions

__all__ = ("ModelPermissions", "view_permission")

# Read, create, change and delete map to the view's model, as in the Django admin; reading needs `view_*` too
# (DRF's own class lets any authenticated user read).
VIEW = "%(app_label)s.view_%(model_name)s"
SAFE_METHODS_WITHOUT_PERMISSION = ("OPTIONS",)


def view_permission(model) -> str:
    return VIEW % {"app_label": model._meta.app_label, "model_name": model._meta.model_name}


class ModelPermissions(DjangoModelPermissions):
    """Model permissions of the view's model, with `view_*` for GET and HEAD.

    A view declares the permissions of the requests whose meaning is not "read or write this model" in
    `required_permissions`: keyed by viewset action name (or, on a plain APIView, by HTTP method), each value is
    a tuple of "app_label.codename", or a dict of HTTP method to such a tuple. Revealing secrets (`list-secrets`,
    `list-value`), policy documents (which belong to the `policies` app whatever the URL) and the import wizard are
    declared so. On a view with a model the `view_*` permission of that model is required as well: acting on an
    object you may not see makes no sense. A request that nothing declares is refused, even to a superuser, so a
    new endpoint fails closed until it says what it needs.
    """

    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": [VIEW],
        "HEAD": [VIEW],
    }

    def has_permission(self, request, view):
        user = request.user
        if not user or not user.is_authenticated:
            return False
        if request.method in SAFE_METHODS_WITHOUT_PERMISSION or getattr(view, "_ignore_model_permissions", False):
            # OPTIONS describes the endpoint; the router's root lists the endpoints. Neither shows data.
            return True
        required = self.get_required_permissions_for(request, view)
        return bool(required) and user.has_perms(required)

    def get_required_permissions_for(self, request, view) -> list[str]:
        model = self._model(view)
        key = getattr(view, "action", None) or ("GET" if request.method == "HEAD" else request.method)
        declared = getattr(view, "required_permissions", {}).get(key)
        if isinstance(declared, dict):
            declared = declared.get(request.method, declared.get("GET") if request.method == "HEAD" else None)
        if declared is not None:
            return [*declared, view_permission(model)] if model is not None else list(declared)
        if model is None or request.method not in self.perms_map:
            return []
        return self.get_required_permissions(request.method, model)

    @staticmethod
    def _model(view):
        # The class attribute, not get_queryset(): that may look objects up (and 404) before permissions are checked.
        queryset = getattr(view, "queryset", None)
        return queryset.model if queryset is not None else None
