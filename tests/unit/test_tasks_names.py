"""Names, versions and modules are validated before anything reaches a command line."""

import pytest

from kirby.errors import PackageError
from kirby.tasks.names import check_package, check_version, module_for, venv_name


@pytest.mark.parametrize(
    "name, canonical",
    [
        ("kirby-example-hello", "kirby-example-hello"),
        ("Kirby_Example.Hello", "kirby-example-hello"),
        ("a", "a"),
    ],
)
def test_valid_names_are_canonicalized(name, canonical):
    assert check_package(name) == canonical


@pytest.mark.parametrize("name", ["", "-x", "x-", "a b", "x;rm -rf /", "x==1", "../x", "--index-url=http://x"])
def test_invalid_names_are_refused_with_the_name_and_the_fix(name):
    with pytest.raises(PackageError, match="is not a valid name: use letters") as error:
        check_package(name)
    assert repr(name) in str(error.value)


@pytest.mark.parametrize(
    "version, normal", [("1.0.0", "1.0.0"), ("1.0", "1.0"), ("2.0rc1", "2.0rc1"), ("1.0-post1", "1.0.post1")]
)
def test_exact_versions_are_normalized(version, normal):
    assert check_version(version) == normal


@pytest.mark.parametrize("version", ["", ">=1.0", "1.0.*", "latest", "1.0 --pre", "==1.0"])
def test_anything_but_an_exact_version_is_refused(version):
    with pytest.raises(PackageError, match="is not a valid exact version: pin one release"):
        check_version(version)


def test_the_module_comes_from_the_package_name_or_the_job():
    assert module_for("kirby-example-hello") == "kirby_example_hello"
    assert module_for("Zope.Thing") == "zope_thing"
    assert module_for("kirby-example-hello", "my_script.main") == "my_script.main"
    with pytest.raises(PackageError, match="not a valid Python module path"):
        module_for("x", "os; import sys")


def test_venv_names_include_package_version_and_python():
    assert venv_name("Kirby_Example.Hello", "1.1.0", "3.11") == "kirby-example-hello-1.1.0-py3.11"
