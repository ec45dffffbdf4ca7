"""Python source read by its tokenizer: literals (plain, raw, bytes, f-strings, triple-quoted,
concatenated), what each is bound to, and comments (alone on a line, or after code)."""

from __future__ import annotations

import pytest

from listener.build.pysource import Literal, PythonSource, read_python


def read(source: str) -> PythonSource:
    result = read_python(source)
    assert result is not None, source
    return result


def only(source: str) -> Literal:
    literals = read(source).literals
    assert len(literals) == 1, literals
    return literals[0]


@pytest.mark.parametrize(("source", "target"), [
    ('password = "x1"\n', "password"),
    ('cfg.db_password = "x1"\n', "cfg.db_password"),
    ('API_KEY: str = "x1"\n', "API_KEY"),
    ('API_KEY: Final[str] = "x1"\n', "API_KEY"),
    ('connect(host=h, passwd="x1")\n', "passwd"),
    ('payload = {"user": u, "password": "x1"}\n', "password"),
    ('os.environ["DB_PASSWORD"] = "x1"\n', "DB_PASSWORD"),
    ('if (token := "x1"):\n    pass\n', "token"),
    ('def login(secret: str = "x1") -> None:\n    pass\n', "secret"),
    ('print("x1")\n', None),
    ('if password == "x1":\n    pass\n', None),
    ('value = data["x1"]\n', None),
])
def test_a_literal_is_bound_to_the_name_before_it(source: str, target: str | None) -> None:
    literal = [lit for lit in read(source).literals if lit.value == "x1"]
    assert len(literal) == 1 and literal[0].target == target


@pytest.mark.parametrize(("source", "prefix", "value"), [
    ("s = 'it\\'s'\n", "", "it's"),
    ('s = r"a\\nb"\n', "r", "a\\nb"),
    ('s = b"\\x41\\xff"\n', "b", "A\xff"),
    ("s = Rb'\\x41'\n", "rb", "\\x41"),
    ('s = u"caf\\u00e9"\n', "u", "café"),
    ('s = """one\nTwo "quoted" three"""\n', "", 'one\nTwo "quoted" three'),
    ('s = ("abc"\n     "def")\n', "", "abcdef"),
])
def test_strings_bytes_and_triple_quoted_literals_are_read_with_their_value(source: str, prefix: str, value: str) -> None:
    literal = only(source)
    assert (literal.prefix, literal.value, literal.target, literal.line) == (prefix, value, "s", 1)
    assert not literal.formatted


@pytest.mark.parametrize(("source", "value"), [
    ('token = f"abc{name}def"\n', "abc{name}def"),
    ('token = f"{d[\'key\']:>{width}}"\n', "{d['key']:>{width}}"),
    ('token = rf"\\d{n}"\n', "\\d{n}"),
    ('token = f"no fields at all"\n', "no fields at all"),
    ('token = f"""a\n{b}\nc"""\n', "a\n{b}\nc"),
])
def test_an_f_string_is_one_literal_with_its_text_as_written(source: str, value: str) -> None:
    literal = only(source)  # the strings inside its fields are part of it, not literals of their own
    assert (literal.value, literal.target, literal.formatted) == (value, "token", True)


def test_comments_are_found_alone_or_after_code_and_never_inside_strings() -> None:
    source = ('# alone\n'
              'x = 1  # after code\n'
              's = """\n# not a comment: inside a string\n"""  # after a string\n'
              '    # indented, alone\n')
    comments = read(source).comments
    assert [(c.line, c.text, c.alone) for c in comments] == [
        (1, "# alone", True), (2, "# after code", False), (5, "# after a string", False),
        (6, "# indented, alone", True)]
    assert [lit.line for lit in read(source).literals] == [3]


def test_a_hash_inside_a_string_is_not_a_comment() -> None:
    read_ = read('url = "http://host/#fragment"  # real\n')
    assert [c.text for c in read_.comments] == ["# real"]
    assert read_.literals[0].value == "http://host/#fragment"


def test_each_literal_keeps_the_lines_of_its_source() -> None:
    literal = only('s = (\n    "one"\n    """two\nthree"""\n)\n')
    assert literal.line == 2
    assert literal.source_lines() == [(2, '"one"'), (3, '"""two'), (4, 'three"""')]


@pytest.mark.parametrize("source", ['s = """never closed\n', "def f(:\n  x = (\n", "if x:\n    a\n  b\n"])
def test_source_the_tokenizer_cannot_read_gives_none(source: str) -> None:
    assert read_python(source) is None
