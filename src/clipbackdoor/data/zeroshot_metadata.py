"""Class names and prompt templates of zero-shot evaluation sets, as configs name them.

A source is a shipped name (``imagenet`` for open_clip's 1,000 ImageNet names; ``openai_imagenet``,
``simple_imagenet`` for its templates), a list in the config, a text file with one entry per line, or
CleanCLIP's ``classes.py``. That file is a Python dict literal whose ``templates`` are lambdas such as
``lambda s: f"a bad photo of a {s}."``; it is read with ``ast`` and never executed, and each lambda becomes
the ``"a bad photo of a {}."`` string that configs, manifests and ``str.format`` use.
"""

from __future__ import annotations

import ast
import string
from pathlib import Path

from clipbackdoor.registry import ConfigError


def resolve_classnames(spec: str | list[str], where: str = "data.eval") -> tuple[str, ...]:
    """``imagenet`` (open_clip's 1,000 names), a list, a ``classes.py``, or a file with one name per line."""
    what = f"{where}.classnames"
    if isinstance(spec, (list, tuple)):
        names = tuple(str(c) for c in spec)
    elif spec == "imagenet":
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        names = tuple(IMAGENET_CLASSNAMES)
    elif str(spec).endswith(".py"):
        names = read_classes_py_names(Path(spec), what)
    else:
        names = _read_lines(Path(spec), what)
    if not names:
        raise ConfigError(f"{what}: no class names")
    return names


def resolve_templates(spec: str | list[str], where: str = "data.eval") -> tuple[str, ...]:
    """``openai_imagenet`` (CLIP's 80), ``simple_imagenet``, a list, a ``classes.py``, or a file of ``{}``
    templates."""
    what = f"{where}.templates"
    if isinstance(spec, (list, tuple)):
        templates = tuple(spec)
    elif spec in ("openai_imagenet", "simple_imagenet"):
        from open_clip import zero_shot_metadata as meta

        raw = meta.OPENAI_IMAGENET_TEMPLATES if spec == "openai_imagenet" else meta.SIMPLE_IMAGENET_TEMPLATES
        # open_clip stores them as lambdas; a "{}" string is what configs and manifests can carry.
        templates = tuple(t("{}") for t in raw)
    elif str(spec).endswith(".py"):
        templates = read_classes_py_templates(Path(spec), what)
    else:
        templates = _read_lines(Path(spec), what)
    if not templates:
        raise ConfigError(f"{what}: no templates")
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ConfigError(f"{what}: template(s) without a '{{}}' placeholder: {bad[:3]}")
    return templates


def read_classes_py_names(path: Path, what: str = "classnames") -> tuple[str, ...]:
    """The ``classes`` list of a CleanCLIP ``classes.py``."""
    node = _classes_py_entry(path, "classes", what)
    try:
        names = ast.literal_eval(node)
    except ValueError:
        names = None
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{what}: {path}: 'classes' must be a literal list of strings")
    return tuple(names)


def read_classes_py_templates(path: Path, what: str = "templates") -> tuple[str, ...]:
    """The ``templates`` of a CleanCLIP ``classes.py``, each lambda turned into a ``"{}"`` string."""
    node = _classes_py_entry(path, "templates", what)
    if not isinstance(node, (ast.List, ast.Tuple)):
        raise ConfigError(f"{what}: {path}: 'templates' must be a list of lambdas or strings")
    templates = []
    for i, element in enumerate(node.elts):
        template = _template(element)
        if template is None or not _one_placeholder(template):
            raise ConfigError(
                f"{what}: {path}: cannot read template {i + 1} `{ast.unparse(element)}`; expected "
                "`lambda s: f\"... {s} ...\"` using the class name once, or a string with one '{}'"
            )
        templates.append(template)
    return tuple(templates)


def _classes_py_entry(path: Path, key: str, what: str) -> ast.expr:
    """The expression under ``key``: a key of the file's dict literal, or a top-level ``key = ...``."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except FileNotFoundError:
        raise ConfigError(f"{what}: file not found: {path}") from None
    except (SyntaxError, UnicodeDecodeError) as err:
        raise ConfigError(f"{what}: {path} is not a Python file: {err}") from None
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Dict):
            for k, v in zip(stmt.value.keys, stmt.value.values):
                if isinstance(k, ast.Constant) and k.value == key:
                    return v
        if isinstance(stmt, ast.Assign):
            targets = stmt.targets
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets = [stmt.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == key for t in targets):
            return stmt.value
    raise ConfigError(
        f"{what}: {path} has no {key!r} entry (expected CleanCLIP's layout: a dict literal with "
        "'classes' and 'templates')"
    )


def _template(node: ast.expr) -> str | None:
    """A ``"{}"`` format string for a template element, or None if it is not understood."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value  # already a "{}" template
    if isinstance(node, ast.Lambda):
        args = node.args
        if len(args.args) == 1 and not (args.posonlyargs or args.vararg or args.kwonlyargs or args.kwarg):
            return _format_string(node.body, args.args[0].arg)
    return None


def _format_string(node: ast.expr, arg: str) -> str | None:
    """The lambda body as a format string in which ``arg`` is ``{}``: f-strings, ``+`` and ``.format``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return _escape(node.value)
    if isinstance(node, ast.Name) and node.id == arg:
        return "{}"
    if isinstance(node, ast.FormattedValue):
        plain = node.conversion == -1 and node.format_spec is None
        return "{}" if plain and isinstance(node.value, ast.Name) and node.value.id == arg else None
    if isinstance(node, ast.JoinedStr):
        parts = [_format_string(v, arg) for v in node.values]
        return None if None in parts else "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _format_string(node.left, arg), _format_string(node.right, arg)
        return None if left is None or right is None else left + right
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
        and isinstance(node.func.value, ast.Constant)
        and isinstance(node.func.value.value, str)
        and not node.keywords
        and [a.id if isinstance(a, ast.Name) else None for a in node.args] == [arg]
    ):
        return node.func.value.value  # "a photo of a {}.".format(s)
    return None


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _one_placeholder(template: str) -> bool:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError:
        return False
    return fields == [""]


def _read_lines(path: Path, what: str) -> tuple[str, ...]:
    if not path.is_file():
        raise ConfigError(f"{what}: file not found: {path}")
    lines = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if not lines:
        raise ConfigError(f"{what}: {path} is empty")
    return lines
