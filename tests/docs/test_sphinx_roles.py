"""``docs/hooks/sphinx_roles.py``: Sphinx roles in docstrings become autorefs.

A small package is written to disk and loaded by griffe with the extension, as
mkdocstrings loads ``iai_prob``; each docstring's roles are then checked one by one.
"""

import textwrap

import pytest

griffe = pytest.importorskip("griffe")

FILES = {
    "__init__.py": '''
        """The package: :mod:`.sub`, :func:`~pkg.sub.helper`, :class:`pkg.Thing`."""
        from .sub import Thing

        __all__ = ["Thing"]
    ''',
    "sub.py": '''
        """:class:`Thing`, :meth:`Thing.run`, :class:`torch.Tensor`, :func:`!helper`,
        :func:`the helper <helper>`, :attr:`_private`, :class:`Missing`,
        :py:func:`pkg.sub.absent`, :mod:`.deep`."""

        import torch

        __all__ = ["Thing", "helper"]


        def helper():
            """Help."""


        class Thing:
            """A thing: :meth:`run` runs, :meth:`quiet` has no docstring."""

            def run(self):
                """Run, see :func:`nearby`."""

            def quiet(self):
                pass


        _private = 1
    ''',
    "deep.py": '''
        """Deep: :func:`nearby` and :class:`Thing`."""


        def nearby():
            """Nearby."""
    ''',
}


@pytest.fixture(scope="module")
def package(tmp_path_factory, sphinx_roles):
    root = tmp_path_factory.mktemp("roles") / "pkg"
    root.mkdir()
    for name, text in FILES.items():
        (root / name).write_text(textwrap.dedent(text).lstrip())
    extensions = griffe.load_extensions(sphinx_roles.SphinxRoles)
    return griffe.load("pkg", search_paths=[str(root.parent)], extensions=extensions)


def _ref(identifier, title, *, optional=False):
    flag = " optional" if optional else ""
    return f'<autoref identifier="{identifier}"{flag}><code>{title}</code></autoref>'


def test_package_docstring(package):
    text = package.docstring.value
    assert _ref("pkg.sub", "sub") in text  # relative module, as a relative import
    assert _ref("pkg.sub.helper", "helper()") in text  # ~ keeps the last name, func adds ()
    assert _ref("pkg.sub.Thing", "pkg.Thing") in text  # re-export: the canonical path
    assert ":mod:" not in text and ":func:" not in text and ":class:" not in text


def test_module_docstring(package):
    text = package["sub"].docstring.value
    assert _ref("pkg.sub.Thing", "Thing") in text  # in the module's scope
    assert _ref("pkg.sub.Thing.run", "Thing.run()") in text
    assert _ref("torch.Tensor", "torch.Tensor", optional=True) in text  # another package
    assert "<code>helper()</code>," in text and 'identifier="helper' not in text  # !: no link
    assert _ref("pkg.sub.helper", "the helper") in text  # explicit title
    assert _ref("pkg.sub._private", "_private", optional=True) in text  # not rendered
    assert _ref("Missing", "Missing") in text  # nowhere: required, the strict build fails
    assert _ref("pkg.sub.absent", "pkg.sub.absent()") in text  # py: domain; missing: required
    assert _ref("pkg.deep", "deep") in text  # sibling module


def test_class_and_method_scopes(package):
    cls = package["sub.Thing"]
    assert _ref("pkg.sub.Thing.run", "run()") in cls.docstring.value  # class scope
    assert _ref("pkg.sub.Thing.quiet", "quiet()", optional=True) in cls.docstring.value
    # not in scope anywhere: the nearest object of that name in the package
    assert _ref("pkg.deep.nearby", "nearby()") in cls.members["run"].docstring.value


def test_nearest_name_prefers_the_closest_module(package):
    text = package["deep"].docstring.value
    assert _ref("pkg.deep.nearby", "nearby()") in text
    assert _ref("pkg.sub.Thing", "Thing") in text


def test_convert_roles_without_package(sphinx_roles):
    text = "See :class:`~torch.nn.Module` and :func:`fit`."
    assert sphinx_roles.convert_roles(text) == (
        "See "
        + _ref("torch.nn.Module", "Module", optional=True)
        + " and "
        + _ref("fit", "fit()")
        + "."
    )


def test_text_without_roles_is_unchanged(sphinx_roles):
    text = "``literal`` and :param x: and :math:`x` stay as they are."
    assert sphinx_roles.convert_roles(text) == text
