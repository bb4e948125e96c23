"""``docs/hooks/mathml.py``: the math of a page becomes MathML at build time."""

import logging
from types import SimpleNamespace

import pytest

PAGE = SimpleNamespace(file=SimpleNamespace(src_uri="concepts.md"))


def test_inline_and_display_math_become_mathml(mathml):
    content = (
        '<p>A <span class="arithmatex">\\(\\theta \\sim p(\\theta)\\)</span> here.</p>\n'
        '<div class="arithmatex">\\[\\lambda_{k+1} = (1 - \\rho)\\,\\lambda_k'
        " + \\rho\\,\\hat\\lambda &lt; 1\\]</div>"
    )
    out = mathml.on_page_content(content, page=PAGE)
    assert out.startswith('<p>A <span class="arithmatex"><math ')
    assert 'display="inline"' in out and 'display="block"' in out
    assert "\\theta" not in out and "\\(" not in out and "\\[" not in out
    assert "&#x003B8;" in out  # θ
    assert "<mo>&#x0003C;</mo>" in out  # the HTML-escaped < was read as TeX <
    assert out.endswith("</math></div>")


def test_text_without_math_is_unchanged(mathml):
    content = "<p>No math, a $ sign and <code>\\(x\\)</code>.</p>"
    assert mathml.on_page_content(content, page=PAGE) == content


def test_unknown_command_is_a_warning_and_stays_tex(mathml, caplog):
    content = '<span class="arithmatex">\\(\\notacommand x\\)</span>'
    with caplog.at_level(logging.WARNING, logger="mkdocs.hooks.mathml"):
        out = mathml.on_page_content(content, page=PAGE)
    assert out == content
    assert "concepts.md" in caplog.text and "\\notacommand" in caplog.text


def test_to_mathml_refuses_what_it_cannot_convert(mathml):
    with pytest.raises(mathml.UnknownTexError, match="notacommand"):
        mathml.to_mathml("\\notacommand", display=False)
    assert mathml.to_mathml("x^2", display=True).startswith("<math")
