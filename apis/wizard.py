"""The Language Model API import wizard: the operation sets and the API policy document it generates.

The API policy is assembled from `POLICY_CONTRIBUTORS`, a list in the spirit of Kong's filter lists: each contributor
turns one optional block of the wizard input (`token_limit`, `semantic_cache`, … in later issues) into `inbound` and
`outbound` elements. Adding a wizard tab is adding a contributor (with a `serializer_class` for its block).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from .choices import APITypeChoices, HttpMethodChoices

__all__ = (
    "CHAT_COMPLETIONS",
    "OPTIONAL_OPENAI_OPERATIONS",
    "POLICY_CONTRIBUTORS",
    "Element",
    "ImportContext",
    "OperationSpec",
    "PolicyContributor",
    "build_api_policy",
    "operation_specs",
)


#
# Operations
#


@dataclass(frozen=True)
class OperationSpec:
    name: str
    display_name: str
    method: str
    url_template: str


CHAT_COMPLETIONS = OperationSpec(
    "chat-completions", "Creates a model response for the given chat conversation", "POST", "/chat/completions"
)
# The extra OpenAI operations the wizard may add, keyed as the input names them.
OPTIONAL_OPENAI_OPERATIONS = {
    "POST /completions": OperationSpec(
        "completions", "Creates a completion for the provided prompt and parameters", "POST", "/completions"
    ),
    "POST /embeddings": OperationSpec(
        "embeddings", "Creates an embedding vector representing the input text", "POST", "/embeddings"
    ),
    "GET /models": OperationSpec("list-models", "Lists the currently available models", "GET", "/models"),
    "POST /responses": OperationSpec("responses", "Creates a model response", "POST", "/responses"),
}


def operation_specs(api_type: str, extra: list[str] | tuple[str, ...] = ()) -> list[OperationSpec]:
    """`openai`: chat completions plus the chosen extras; `passthrough`: one `/*` wildcard per HTTP method."""
    if api_type == APITypeChoices.PASSTHROUGH:
        return [OperationSpec(method.lower(), method, method, "/*") for method in HttpMethodChoices.values]
    return [CHAT_COMPLETIONS, *(OPTIONAL_OPENAI_OPERATIONS[key] for key in dict.fromkeys(extra))]


#
# Policy document
#


@dataclass
class Element:
    """A minimal XML element that renders compactly (`<base/>`), the way the documents are shown and stored."""

    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list["Element"] = field(default_factory=list)
    text: str = ""

    def render(self) -> str:
        attrs = "".join(f" {name}={quoteattr(value)}" for name, value in self.attrs.items())
        if not self.children and not self.text:
            return f"<{self.tag}{attrs}/>"
        inner = escape(self.text) + "".join(child.render() for child in self.children)
        return f"<{self.tag}{attrs}>{inner}</{self.tag}>"


@dataclass(frozen=True)
class ImportContext:
    """What contributors may need to know about the objects the wizard creates."""

    api_name: str
    api_type: str
    backend_name: str
    named_value_name: str | None = None


class PolicyContributor:
    """Turns one optional block of the wizard input into policy elements.

    Attributes:
        key: name of the optional block in the wizard input; empty for a contributor that always applies.
        serializer_class: validates the block (`ImportLanguageModelSerializer` adds it as an optional field).
    """

    key: str = ""
    serializer_class = None

    def inbound(self, block: Mapping[str, Any], context: ImportContext) -> list[Element]:
        return []

    def outbound(self, block: Mapping[str, Any], context: ImportContext) -> list[Element]:
        return []


class SetBackendService(PolicyContributor):
    """Routes the API to the backend the wizard created."""

    def inbound(self, block, context):
        return [Element("set-backend-service", {"backend-id": context.backend_name})]


POLICY_CONTRIBUTORS: list[PolicyContributor] = [SetBackendService()]


def build_api_policy(data: Mapping[str, Any], context: ImportContext) -> str:
    inbound, outbound = [Element("base")], [Element("base")]
    for contributor in POLICY_CONTRIBUTORS:
        block = data.get(contributor.key) if contributor.key else {}
        if block is None:
            continue
        inbound += contributor.inbound(block, context)
        outbound += contributor.outbound(block, context)
    document = Element(
        "policies",
        children=[
            Element("inbound", children=inbound),
            Element("backend", children=[Element("base")]),
            Element("outbound", children=outbound),
            Element("on-error", children=[Element("base")]),
        ],
    )
    return document.render()
