"""The OpenAPI schema's view class: every operation also documents the error answers it can give.

drf-spectacular documents the success answer only; a client (and the REST fuzz battery, tests/fuzz/) then meets
400, 401, 403, 404, 409, 413 and 415 answers the schema never mentions. Their body is the one shape of
`gateway_admin.exceptions`: `{"detail": "..."}` or `{"<field>": ["message", ...]}`.
"""

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent

__all__ = ("SluiceAutoSchema",)

ERROR_COMPONENT = "Error"
ERROR_SCHEMA = {
    "type": "object",
    "description": "`detail` for an error of the whole request, or one list of messages per field at fault.",
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": {},
}
DESCRIPTIONS = {
    "400": "Invalid request: the body names each field at fault.",
    "401": "Not authenticated (an invalid token).",
    "403": "Not authenticated, or missing a permission this request needs (docs/permissions.md).",
    "404": "No object of this name.",
    "409": "Conflicts with the stored configuration (a duplicate name, a referenced object).",
    "413": "Request body too large.",
    "415": "Request body is not JSON.",
}
WRITES = ("POST", "PUT", "PATCH", "DELETE")


class SluiceAutoSchema(AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        component = ResolvedComponent(
            name=ERROR_COMPONENT, type=ResolvedComponent.SCHEMA, object=ERROR_COMPONENT, schema=ERROR_SCHEMA
        )
        self.registry.register_on_missing(component)
        for code in self._error_codes(operation):
            operation["responses"].setdefault(
                code, {"content": {"application/json": {"schema": component.ref}}, "description": DESCRIPTIONS[code]}
            )
        return operation

    def _error_codes(self, operation) -> list[str]:
        codes = ["401", "403"]
        parameters = operation.get("parameters", ())
        if any(parameter["in"] == "path" for parameter in parameters):
            codes.append("404")
        if "requestBody" in operation or any(parameter["in"] == "query" for parameter in parameters):
            codes.append("400")
        if self.method in WRITES:
            codes += ["400", "409", "413", "415"]
        return sorted(set(codes))
