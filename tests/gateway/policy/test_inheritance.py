"""``<base/>`` expansion across global -> product -> API -> operation, and the effective-document view."""

from __future__ import annotations

from gateway.policy import Base, Section, effective_document, merge_sections, parse_document, parse_xml, to_xml


def h(name: str) -> str:
    return f'<set-header name="{name}" />'


def names(root, section: str) -> list[str]:
    for child in root.children:
        if child.tag == section:
            return [el.attrs.get("name", el.tag) for el in child.children]
    raise AssertionError(f"no section {section}")


GLOBAL = (
    f"<policies><inbound>{h('g1')}<base/>{h('g2')}</inbound><backend><forward-request/></backend>"
    f"<outbound>{h('go')}</outbound></policies>"
)
PRODUCT = f"<policies><inbound>{h('p1')}<base/></inbound><outbound><base/>{h('po')}</outbound></policies>"
API = f"<policies><inbound><base/>{h('a1')}</inbound><backend><base/></backend></policies>"
OPERATION = f"<policies><inbound>{h('o1')}<base/>{h('o2')}</inbound><outbound>{h('oo')}<base/></outbound></policies>"


def test_base_splices_parent_at_its_position_across_four_scopes():
    root = effective_document(GLOBAL, PRODUCT, API, OPERATION)
    assert names(root, "inbound") == ["o1", "p1", "g1", "g2", "a1", "o2"]
    assert names(root, "backend") == ["forward-request"]
    assert names(root, "outbound") == ["oo", "go", "po"]
    assert [c.tag for c in root.children] == ["inbound", "backend", "outbound"]


def test_missing_document_or_section_inherits_parent_unchanged():
    root = effective_document(GLOBAL, None, None, f"<policies><inbound>{h('o1')}</inbound></policies>")
    assert names(root, "inbound") == ["o1"]  # no <base/>: inherited inbound dropped
    assert names(root, "outbound") == ["go"]  # operation has no outbound: inherited as is
    assert names(root, "backend") == ["forward-request"]


def test_empty_section_drops_inherited_policies():
    root = effective_document(GLOBAL, None, "<policies><outbound /></policies>", None)
    assert names(root, "outbound") == []
    assert names(root, "inbound") == ["g1", "g2"]  # base at global scope is a no-op


def test_base_before_and_after_siblings():
    api = f"<policies><inbound>{h('a1')}<base/></inbound></policies>"
    op = f"<policies><inbound><base/>{h('o1')}</inbound></policies>"
    root = effective_document(f"<policies><inbound>{h('g')}</inbound></policies>", None, api, op)
    assert names(root, "inbound") == ["a1", "g", "o1"]


def test_on_error_only_when_defined_somewhere():
    root = effective_document(None, None, "<policies><on-error><base/>" + h("e") + "</on-error></policies>", None)
    assert [c.tag for c in root.children] == ["on-error"]
    assert names(root, "on-error") == ["e"]


def test_effective_document_accepts_parsed_documents_and_serialises():
    doc = parse_document(API, "api")
    root = effective_document(GLOBAL, None, doc, None)
    text = to_xml(root)
    assert text.startswith("<policies>\n    <inbound>\n")
    reparsed = parse_document(text, "operation")
    assert [p.name for p in reparsed.sections[Section.INBOUND]] == ["set-header"] * 3
    # the input trees are not shared with the output
    root.children[0].children.clear()
    assert doc.section_elements()[Section.INBOUND]


def test_merge_sections_on_compiled_steps_shares_policy_objects():
    g = parse_document(GLOBAL, "global")
    a = parse_document(API, "api")
    merged = merge_sections([g.sections, None, a.sections, None], lambda s: isinstance(s, Base))
    assert merged[Section.INBOUND][0] is g.sections[Section.INBOUND][0]
    assert [p.header for p in merged[Section.INBOUND]] == [b"g1", b"g2", b"a1"]


def test_to_xml_escapes_text_and_attributes():
    root = parse_xml(
        '<policies><inbound><set-header name="a&amp;&quot;"><value>1 &lt; 2</value></set-header></inbound></policies>'
    )
    text = to_xml(root)
    assert 'name="a&amp;&quot;"' in text
    assert "<value>1 &lt; 2</value>" in text
    assert to_xml(parse_xml(text)) == text
