"""The ``rawxml`` format: conversion to well-formed XML, positions of the original text, and the export back."""

from __future__ import annotations

import pytest

from gateway.policy import PolicyError, parse_document, parse_tree, rawxml_to_xml, to_rawxml, to_xml
from gateway.policy.rawxml import xml_to_rawxml

from .helpers import FIXTURES


def same_tree(a: str, b: str, fmt_a: str = "xml", fmt_b: str = "rawxml") -> bool:
    return to_xml(parse_tree(a, fmt_a)) == to_xml(parse_tree(b, fmt_b))


def inbound(body: str) -> str:
    return f"<policies><inbound>{body}</inbound></policies>"


def test_portal_form_and_escaped_form_parse_to_the_same_tree():
    assert same_tree(
        (FIXTURES / "choose-deployment.xml").read_text(), (FIXTURES / "choose-deployment.raw.xml").read_text()
    )


@pytest.mark.parametrize(
    ("raw", "xml"),
    [
        ('<when condition="@(context.Request.MatchedParameters["deployment-id"] == "gpt-4o")"/>',
         '<when condition="@(context.Request.MatchedParameters[&quot;deployment-id&quot;] == &quot;gpt-4o&quot;)"/>'),
        ('<when condition="@(1 < 2 && 3 > 2)"/>', '<when condition="@(1 &lt; 2 &amp;&amp; 3 &gt; 2)"/>'),
        ("<when condition='@(\"it's\" == \"x\")'/>", "<when condition='@(&quot;it&apos;s&quot; == &quot;x&quot;)'/>"),
        ('<value>@(a < b ? "<x>" : "&amp;")</value>', '<value>@(a &lt; b ? "&lt;x&gt;" : "&amp;amp;")</value>'),
        ('<value>@($"{context.Variables["a"]}>{{literal}}")</value>',
         '<value>@($"{context.Variables["a"]}&gt;{{literal}}")</value>'),
        ('<v a="@(@"say ""hi"" <now>")"/>', '<v a="@(@&quot;say &quot;&quot;hi&quot;&quot; &lt;now&gt;&quot;)"/>'),
        ('<v a="@(\'"\' == \'<\')"/>', '<v a="@(&apos;&quot;&apos; == &apos;&lt;&apos;)"/>'),
        ('<v a="@(1 /* ) " */ + 2)"/>', '<v a="@(1 /* ) &quot; */ + 2)"/>'),
        ('<v a="  @(&)"/>', '<v a="  @(&amp;)"/>'),
        ('<v a="x &amp; y">text &lt; @(1)</v>', '<v a="x &amp; y">text &lt; @(1)</v>'),  # not expressions: plain XML
    ],
)  # fmt: skip
def test_conversion(raw, xml):
    assert rawxml_to_xml(raw) == xml


def test_multiline_block_in_an_attribute_keeps_its_lines():
    raw = '<v a="@{\n  // a comment with ) and "\n  return 1;\n}"/>'
    converted = rawxml_to_xml(raw)
    assert "&#10;" in converted and "&quot;" in converted
    assert parse_tree(raw, "rawxml").attrs["a"] == '@{\n  // a comment with ) and "\n  return 1;\n}'


def test_interpolation_holes_may_hold_strings_with_closing_brackets():
    raw = inbound(
        '<set-header name="x"><value>@($"{(context.Variables.ContainsKey(")") ? "}" : ")")}")</value></set-header>'
    )
    document = parse_document(raw, "api", "rawxml")
    assert document.sections


@pytest.mark.parametrize(
    ("raw", "position", "fragment"),
    [
        # an error after raw quotes on the same line keeps the column as written
        (inbound('\n<set-variable name="v" value="@("a" + "b" + context.Nope)"/>'), (2, 53), "'Nope'"),
        (inbound('<set-variable name="v" value="@("&lt;")"/><bad/>'), (1, 62), "unknown policy <bad>"),
        (inbound('<choose><when condition="@(1 < 2)"><forward-request/></when></choose>'), (1, 55),
         "<forward-request> is not allowed in the inbound section"),
        (inbound('\n  <set-variable name="v" value="@(x == ")"/>'), (2, 33),
         "unterminated policy expression: no matching ')' for '@('"),
        (inbound('\n<set-body>@{ return "}"; </set-body>'), (2, 11), "no matching '}' for '@{'"),
        (inbound('<set-variable name="v" value="a < b"/>'), (1, 52), "malformed XML"),
        (inbound('<set-variable name="v" value="@(1)">\n  <x></y></set-variable>'), (2, 8),
         "malformed XML: mismatched tag"),
    ],
)  # fmt: skip
def test_errors_report_the_original_line_and_column(raw, position, fragment):
    with pytest.raises(PolicyError) as info:
        parse_document(raw, "api", "rawxml")
    assert fragment in info.value.message
    assert (info.value.line, info.value.column) == position


def test_elements_keep_original_positions():
    raw = inbound('<set-variable name="v" value="@("&&&&&&&&")"/><set-variable name="w" value="1"/>')
    steps = next(iter(parse_document(raw, "api", "rawxml").sections.values()))
    assert [(s.line, s.column) for s in steps] == [(1, 20), (1, 66)]


def test_windows_line_endings_count_as_one():
    raw = '<policies>\r\n<inbound>\r\n<set-variable name="v" value="@("a".Nope)"/>\r\n</inbound></policies>'
    with pytest.raises(PolicyError) as info:
        parse_document(raw, "api", "rawxml")
    assert (info.value.line, info.value.column) == (3, 37)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.xml")))
def test_export_keeps_layout_and_round_trips(name):
    text = (FIXTURES / name).read_text()
    fmt = "rawxml" if name.endswith(".raw.xml") else "xml"
    stored = rawxml_to_xml(text) if fmt == "rawxml" else text
    exported = xml_to_rawxml(stored)
    assert exported.count("\n") == stored.count("\n")
    if fmt == "rawxml":
        assert exported == text  # the portal form comes back as written
    assert to_xml(parse_tree(rawxml_to_xml(exported))) == to_xml(parse_tree(stored))


def test_tree_export_writes_expressions_raw():
    tree = parse_tree((FIXTURES / "choose-deployment.xml").read_text())
    exported = to_rawxml(tree)
    assert 'condition="@(context.Request.MatchedParameters["deployment-id"] == "gpt-4o")"' in exported
    assert to_xml(parse_tree(exported, "rawxml")) == to_xml(tree)


def test_unknown_format_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown policy format"):
        parse_tree("<policies/>", "xml-link")
