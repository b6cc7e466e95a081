"""Registries: names to constructors, with config keys checked against the constructor's signature."""

from __future__ import annotations

import pytest

from clipbackdoor.registry import ConfigError, Registry, accepted_kwargs, check_kwargs


@pytest.fixture
def reg():
    # A fresh registry per test, so registrations do not leak into the real ones or into other tests.
    r = Registry("widget")

    @r.register("square")
    class Square:
        def __init__(self, size: int = 1, color: str = "red") -> None:
            self.size, self.color = size, color

    @r.register("circle")
    def circle(radius: float, *, classnames=None):
        return ("circle", radius, classnames)

    @r.register("blob")
    def blob(**kwargs):
        return ("blob", kwargs)

    return r


def test_register_get_names(reg):
    assert reg.names() == ["blob", "circle", "square"]  # sorted for stable help texts
    assert list(reg) == reg.names()
    assert "square" in reg and "triangle" not in reg
    assert reg.get("circle")(2.0) == ("circle", 2.0, None)


def test_register_returns_the_object_unchanged(reg):
    def f():
        return 1

    assert reg.register("f")(f) is f


def test_duplicate_registration_is_an_error(reg):
    # Two plugins claiming one name would otherwise make configs mean different things depending on import
    # order.
    with pytest.raises(KeyError, match="square"):
        reg.register("square")(lambda: None)
    assert reg.get("square").__name__ == "Square"  # the first one stays


def test_build_from_section_and_bare_name(reg):
    sq = reg.build({"name": "square", "size": 3})
    assert (sq.size, sq.color) == (3, "red")
    assert reg.build("square").size == 1


def test_build_does_not_mutate_section(reg):
    section = {"name": "square", "size": 2}
    reg.build(section)
    assert section == {"name": "square", "size": 2}


def test_unknown_kwargs_named_with_valid_keys(reg):
    with pytest.raises(ConfigError) as err:
        reg.build({"name": "square", "colour": "blue", "sise": 2}, where="model")
    msg = str(err.value)
    assert "'colour'" in msg and "'sise'" in msg
    assert "valid keys: size, color" in msg
    assert msg.startswith("model (square)")  # says where in the config


def test_unknown_name_lists_choices(reg):
    with pytest.raises(ConfigError) as err:
        reg.build({"name": "triangle"})
    msg = str(err.value)
    assert "'triangle'" in msg and "blob, circle, square" in msg and "widget" in msg


def test_unknown_name_in_empty_registry():
    with pytest.raises(ConfigError, match="none registered"):
        Registry("thing").get("x")


def test_missing_name(reg):
    with pytest.raises(ConfigError, match="missing 'name'"):
        reg.build({"size": 2}, where="attack")


def test_config_error_is_a_value_error():
    # callers that catch ValueError (argparse-style handling) also see config errors
    assert issubclass(ConfigError, ValueError)


def test_extra_passed_only_when_accepted(reg):
    # Program-supplied arguments (e.g. the eval set's class names) go to constructors that take them and
    # are dropped silently for the others, instead of a TypeError.
    assert reg.build({"name": "circle", "radius": 1.0}, classnames=("a", "b")) == ("circle", 1.0, ("a", "b"))
    sq = reg.build("square", classnames=("a", "b"))
    assert not hasattr(sq, "classnames")


def test_extra_does_not_override_user_value(reg):
    out = reg.build({"name": "circle", "radius": 1.0, "classnames": ("x",)}, classnames=("a", "b"))
    assert out[2] == ("x",)


def test_extra_is_not_checked_as_a_user_key(reg):
    # ``extra`` is not validated against the signature: unknown program args are simply not passed
    assert reg.build("square", experiment_seed=3).size == 1


def test_var_kwargs_constructor_accepts_any_user_key(reg):
    assert reg.build({"name": "blob", "anything": 1}) == ("blob", {"anything": 1})


def test_missing_required_argument_surfaces(reg):
    with pytest.raises(TypeError):
        reg.build("circle")


def test_accepted_and_check_kwargs():
    def f(a, /, b, *args, c=1, **kw):
        pass

    def g(a, /, b, *args, c=1):
        pass

    # positional-only and *args cannot be given by name in a config section
    assert accepted_kwargs(g) == ["b", "c"]
    check_kwargs(g, {"b": 1, "c": 2}, "here")
    with pytest.raises(ConfigError, match="'a'"):
        check_kwargs(g, {"a": 1}, "here")
    check_kwargs(f, {"zzz": 1}, "here")  # **kw accepts everything


def test_check_kwargs_ignores_self():
    class K:
        def __init__(self, x=1):
            pass

    assert accepted_kwargs(K) == ["x"]
    with pytest.raises(ConfigError, match="'self'"):
        check_kwargs(K, {"self": 1}, "k")
