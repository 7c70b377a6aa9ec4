"""Safe YAML with positions: plain data plus the line and column of every key and value.

The loader is PyYAML's pure-Python pipeline (reader, scanner, parser, composer) with two
changes, and our own construction from the node graph instead of PyYAML's constructor:

- Scalars resolve by the YAML 1.2 core schema, as editors (yaml-language-server) read them:
  only ``true``/``false`` are booleans, ``9:16`` is a string rather than a base-60 number,
  ``2024-01-01`` is a string, ``010`` is ten. Any other explicit tag is refused.
- Composing refuses nesting deeper than ``MAX_DEPTH`` while it recurses, so a 10,000-deep
  document fails fast instead of exhausting the stack; the node graph is then measured with
  aliases expanded (and cycles refused) before any data is built, so alias bombs cost nothing.
- Text that cannot be stored or sent is refused where it is written: control characters in
  the file, a NUL, and lone UTF-16 surrogates from ``\\uD83C``-style escapes (a pair of them,
  as ``json.dumps`` writes an emoji, is joined into the character it stands for).

Events come from libyaml when PyYAML has it (about five times faster: 200,000 ``vars`` in a
few seconds), else from PyYAML's pure-Python scanner; composing is ours either way.

Duplicate mapping keys are errors. ``<<`` merge keys work; explicit keys win over merged ones.

The positions themselves (:class:`~runner.manifest.positions.Document`,
:class:`~runner.manifest.positions.Where`, :data:`~runner.manifest.positions.FieldPath`) are
:mod:`runner.manifest.positions`.
"""

from __future__ import annotations

import importlib
import math
import re
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from runner.errors import ManifestError
from runner.manifest.positions import Document, FieldPath, format_path

MAX_DEPTH = 64  # nesting of collections; real manifests use fewer than ten levels
MAX_NODES = 1_000_000  # nodes with aliases expanded
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_NUMBER_DIGITS = 100  # Python refuses to parse ints past 4,300 digits; no field needs 100

_TAG = "tag:yaml.org,2002:"
# What YAML allows in a file (PyYAML's Reader.NON_PRINTABLE, negated), and lone surrogates.
_NOT_PRINTABLE = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class _CoreResolver(BaseResolver):
    """Implicit scalar types of the YAML 1.2 core schema."""


_CoreResolver.add_implicit_resolver(
    _TAG + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_CoreResolver.add_implicit_resolver(
    _TAG + "int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_CoreResolver.add_implicit_resolver(
    _TAG + "float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"),
    list("-+.0123456789"),
)
_CoreResolver.add_implicit_resolver(
    _TAG + "null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_CoreResolver.add_implicit_resolver(_TAG + "merge", re.compile(r"^<<$"), ["<"])


_RESOLVER = _CoreResolver()


class _TooDeep(Exception):
    def __init__(self, mark: yaml.Mark) -> None:
        self.mark = mark


class _DepthLimit(Composer):
    """Our composer: PyYAML's, refusing nesting past ``MAX_DEPTH`` as it recurses."""

    depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.depth >= MAX_DEPTH:
            raise _TooDeep(self.peek_event().start_mark)  # type: ignore[attr-defined]
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Loader(Reader, Scanner, Parser, _DepthLimit, _CoreResolver):
    """Pure Python events (PyYAML's scanner and parser)."""

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        _DepthLimit.__init__(self)
        _CoreResolver.__init__(self)

    def single_node(self) -> Node | None:
        return self.get_single_node()


# yaml.cyaml.CParser: libyaml's event parser (absent when PyYAML was built without it).
_CParser: Any = (
    getattr(importlib.import_module("yaml.cyaml"), "CParser", None)
    if (yaml.__with_libyaml__)
    else None
)

if _CParser is not None:

    class _FastLoader(_CParser, _DepthLimit, _CoreResolver):  # type: ignore[misc]
        """libyaml events, composed by our (Python) composer."""

        def __init__(self, text: str) -> None:
            _CParser.__init__(self, text)
            _DepthLimit.__init__(self)
            _CoreResolver.__init__(self)

        def single_node(self) -> Node | None:
            # CParser has a C get_single_node of its own; ours composes (depth-checked).
            return _DepthLimit.get_single_node(self)


def _line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def decode(raw: bytes, file: str) -> str:
    """UTF-8 text (a BOM is allowed), or a ManifestError naming the first bad byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise ManifestError(
            f"not UTF-8 text (byte 0x{raw[err.start]:02x}); is this a binary file?",
            file=file,
            line=line,
            column=column,
        ) from None


def compose(text: str, file: str) -> Node | None:
    """The node graph of a single-document YAML text, with syntax errors as ManifestErrors."""
    bad = _NOT_PRINTABLE.search(text)
    if bad is not None:
        line, col = _line_col(text, bad.start())
        char = ord(bad.group())
        message = (
            f"a lone surrogate U+{char:04X} cannot be stored as text"
            if 0xD800 <= char <= 0xDFFF
            else f"control character U+{char:04X} is not allowed in YAML; is this a binary file?"
        )
        raise ManifestError(
            message,
            file=file,
            line=line,
            column=col,
        ) from None
    if _CParser is not None:
        try:
            return _compose(_FastLoader(text), file, fast=True)
        except _LibyamlSaid:
            # libyaml words syntax errors its own way, stops at 1,000 levels of nesting and
            # refuses \uD83C-style escapes outright: PyYAML reads the same text again, so a
            # bad manifest gets the same message either way (and a surrogate pair is joined).
            pass
    return _compose(_Loader(text), file)


class _LibyamlSaid(Exception):
    """libyaml found a syntax error: let PyYAML's loader say it."""


def _compose(loader: _Loader | Any, file: str, *, fast: bool = False) -> Node | None:
    try:
        node: Node | None = loader.single_node()
        return node
    except _TooDeep as err:
        raise ManifestError(
            f"nested deeper than {MAX_DEPTH} levels",
            file=file,
            line=err.mark.line + 1,
            column=err.mark.column + 1,
        ) from None
    except yaml.MarkedYAMLError as err:
        if fast and not isinstance(err, yaml.composer.ComposerError):
            raise _LibyamlSaid from None
        raise _syntax_error(err, file) from None
    except yaml.YAMLError as err:  # pragma: no cover - every PyYAML parse error is marked
        if fast:
            raise _LibyamlSaid from None
        raise ManifestError(f"YAML error: {err}", file=file) from None
    finally:
        loader.dispose()


def _syntax_error(err: yaml.MarkedYAMLError, file: str) -> ManifestError:
    mark = err.problem_mark or err.context_mark
    problem = (err.problem or "invalid YAML").removeprefix("but ")
    message = f"YAML syntax error: {problem}"
    if err.context:
        context = err.context
        if err.context_mark is not None and err.context_mark is not mark:
            context += f" started at line {err.context_mark.line + 1}"
        message += f" ({context})"
    if "'\\t'" in problem:
        message += "; YAML indentation must use spaces, not tabs"
    return ManifestError(
        message,
        file=file,
        line=mark.line + 1 if mark else None,
        column=mark.column + 1 if mark else None,
    )


def _measure(root: Node, file: str) -> None:
    """Refuse alias cycles, alias-expanded depth past MAX_DEPTH and more than MAX_NODES."""
    sizes: dict[int, int] = {}
    heights: dict[int, int] = {}
    active: set[int] = set()

    def fail(node: Node, message: str) -> ManifestError:
        mark = node.start_mark
        return ManifestError(message, file=file, line=mark.line + 1, column=mark.column + 1)

    def visit(node: Node, depth: int) -> int:
        nid = id(node)
        if nid in sizes:
            if depth + heights[nid] - 1 > MAX_DEPTH:
                raise fail(node, f"nested deeper than {MAX_DEPTH} levels once aliases expand")
            return sizes[nid]
        if nid in active:
            raise fail(node, "the node anchored here contains an alias of itself (recursive alias)")
        if depth > MAX_DEPTH:
            raise fail(node, f"nested deeper than {MAX_DEPTH} levels once aliases expand")
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        active.add(nid)
        size = 1 + sum(visit(child, depth + 1) for child in children)
        active.discard(nid)
        height = 1 + max((heights[id(c)] for c in children), default=0)
        sizes[nid], heights[nid] = size, height
        if size > MAX_NODES:
            raise fail(node, f"expands to more than {MAX_NODES} nodes (alias bomb?)")
        return size

    visit(root, 1)


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc

    def fail(self, node: Node, message: str, path: FieldPath) -> ManifestError:
        mark = node.start_mark
        return ManifestError(
            message,
            file=self.doc.file,
            line=mark.line + 1,
            column=mark.column + 1,
            field=format_path(path) or None,
        )

    def text(self, node: Node, text: str, path: FieldPath) -> str:
        """``text`` as it can be stored: a surrogate pair joined, a lone one or a NUL refused."""
        if _UNSTORABLE.search(text) is None:
            return text
        if "\x00" in text:
            raise self.fail(node, "a NUL character (\\0) is not allowed", path)
        try:
            return text.encode("utf-16", "surrogatepass").decode("utf-16")
        except UnicodeDecodeError:
            lone = _UNSTORABLE.search(text)
            code = ord(lone.group()) if lone else 0
            raise self.fail(
                node,
                f"a lone surrogate \\u{code:04x} (half of an escaped character) cannot be "
                "stored as text; write the character itself or one \\U escape",
                path,
            ) from None

    def build(self, node: Node, path: FieldPath) -> Any:
        self.doc.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, SequenceNode | MappingNode):
            self.doc.collections.add(path)
        if isinstance(node, SequenceNode):
            if node.tag != _TAG + "seq":
                raise self.fail(node, f"unsupported YAML tag {node.tag!r}", path)
            return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
        if isinstance(node, MappingNode):
            if node.tag != _TAG + "map":
                raise self.fail(node, f"unsupported YAML tag {node.tag!r}", path)
            return self.mapping(node, path)
        raise self.fail(node, "unsupported YAML node", path)  # pragma: no cover

    def mapping(self, node: MappingNode, path: FieldPath) -> dict[str, Any]:
        own: dict[str, tuple[Node, Node]] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == _TAG + "merge":
                merges.append(value_node)
                continue
            if not isinstance(key_node, ScalarNode):
                raise self.fail(key_node, "mapping keys must be plain strings", path)
            key = self.text(key_node, str(key_node.value), path)
            if key in own:
                first = own[key][0].start_mark.line + 1
                raise self.fail(
                    key_node, f"duplicate key {key!r} (first at line {first})", (*path, key)
                )
            own[key] = (key_node, value_node)
        result: dict[str, Any] = {}
        for merge in merges:
            sources = merge.value if isinstance(merge, SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, MappingNode):
                    raise self.fail(source, "a << merge takes a mapping or a list of them", path)
                for key, value in self.mapping(source, path).items():
                    result.setdefault(key, value)
        for key, (key_node, value_node) in own.items():
            sub = (*path, key)
            self.doc.keys[sub] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = self.build(value_node, sub)
        return result

    def scalar(self, node: ScalarNode, path: FieldPath) -> Any:
        tag, text = node.tag, str(node.value)
        if tag == _TAG + "str":
            return self.text(node, text, path)
        resolved = _RESOLVER.resolve(ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        if tag == _TAG + "float" and resolved == _TAG + "int":
            resolved = tag
        if tag != resolved and tag in (_TAG + t for t in ("null", "bool", "int", "float")):
            raise self.fail(node, f"{text!r} is not a valid {tag.removeprefix(_TAG)}", path)
        if tag == _TAG + "null":
            return None
        if tag == _TAG + "bool":
            return text.lower() == "true"
        if tag == _TAG + "int":
            if len(text) > MAX_NUMBER_DIGITS:
                raise self.fail(node, f"a number of {len(text)} digits is too long", path)
            if text.startswith(("0o", "0x")):
                return int(text[2:], 8 if text[1] == "o" else 16)
            return int(text, 10)
        if tag == _TAG + "float":
            number = float(text)
            if not math.isfinite(number):
                raise self.fail(node, f"{text} is out of range for a number", path)
            return number
        if tag == _TAG + "merge":
            return text
        raise self.fail(node, f"unsupported YAML tag {tag!r}", path)


def load_document(text: str, file: str) -> Document:
    """Parse one YAML document into plain data with positions; ManifestError on any problem."""
    doc = Document(file=file, data=None)
    root = compose(text, file)
    if root is None:
        return doc
    _measure(root, file)
    doc.data = _Builder(doc).build(root, ())
    return doc
