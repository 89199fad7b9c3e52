"""Reply parsers: code fences, tolerant object parsing, safety and linear time."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexllm import extract_code_snippets, parse_to_code, parse_to_obj


@pytest.mark.parametrize("text, expected", [
    ("```python\nx = 1\n```", [{"language": "python", "code": "x = 1"}]),
    ("a\n~~~bash\nls\n~~~\nb", [{"language": "bash", "code": "ls"}]),
    ("```\nplain\n```", [{"language": "", "code": "plain"}]),
    ('```python title="a.py"\nx\n```', [{"language": "python", "code": "x"}]),
    ("````md\n```py\ninner\n```\n````", [{"language": "md", "code": "```py\ninner\n```"}]),
    ("```js\nopen()\nnot closed", [{"language": "js", "code": "open()\nnot closed"}]),
    ("```py\na\n```\ntext\n```json\n{}\n```", [{"language": "py", "code": "a"}, {"language": "json", "code": "{}"}]),
    ("no code here", []),
])
def test_extract_code_snippets(text, expected):
    assert extract_code_snippets(text) == expected


def test_parse_to_code():
    assert parse_to_code("Sure:\n```python\nprint(1)\n```\nDone") == "print(1)"
    assert parse_to_code("  print(2)  ") == "print(2)"


@pytest.mark.parametrize("text, expected", [
    ('{"a": 1}', {"a": 1}),
    ("```json\n{\"a\": [1, 2,],}\n```", {"a": [1, 2]}),
    ("Result: {'a': True, 'b': None} done", {"a": True, "b": None}),
    ("{a: 1, // comment\n 'b': 'it\\'s', /* x */ c: [1,2,]}", {"a": 1, "b": "it's", "c": [1, 2]}),
    ("[1, 2, 3]", [1, 2, 3]),
    ("(1, 2)", (1, 2)),
    ("The list is [\"x\", \"y\"] as requested.", ["x", "y"]),
])
def test_parse_to_obj(text, expected):
    assert parse_to_obj(text) == expected


def test_parse_to_obj_failure_says_what_was_tried():
    with pytest.raises(ValueError, match="json.*literal_eval.*tolerant"):
        parse_to_obj("no data at all")


def test_never_executes_code(tmp_path):
    marker = tmp_path / "pwned"
    for payload in (f"__import__('os').system('touch {marker}')",
                    f"```python\nopen('{marker}', 'w')\n```",
                    f"{{'a': __import__('os').system('touch {marker}')}}"):
        with pytest.raises(ValueError):
            parse_to_obj(payload)
    assert not marker.exists()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("text", ["`" * 1_000_000, "```\n" * 200_000, "[" * 100_000, "{" * 100_000 + "}" * 100_000,
                                  "'" * 500_000, "~~~~\n" * 100_000, "[1," * 100_000])
def test_adversarial_inputs_finish(text):
    extract_code_snippets(text)
    try:
        parse_to_obj(text)
    except ValueError:
        pass


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.text(alphabet=st.sampled_from(list("{}[]()'\",:`~\n #/*abcTrueNone0123 \\")), max_size=200))
def test_parsers_raise_only_value_error(text):
    extract_code_snippets(text)
    parse_to_code(text)
    try:
        parse_to_obj(text)
    except ValueError:
        pass


# realistic replies of reasoning and chatty models
@pytest.mark.parametrize("text, expected", [
    ('<think>Let me think {not json}</think>\n{"answer": 42}', {"answer": 42}),
    ('<think>maybe [1, 2]?</think>\n\n```json\n{"final": 2}\n```', {"final": 2}),
    ('Let me reason {draft} about it.</think>{"answer": 1}', {"answer": 1}),  # a lone closing tag
    ('Example of the format: {name: <string>}. Answer: {"name": "Ada"}', {"name": "Ada"}),
    ('Options [a, b] considered; result: [1, 2, 3]', [1, 2, 3]),
    ('```text\nnot data\n```\nThe object: {"k": "v"}', {"k": "v"}),
    ('It\'s done: {"it\'s": "fine"}', {"it's": "fine"}),
])
def test_parse_to_obj_on_realistic_replies(text, expected):
    assert parse_to_obj(text) == expected


def test_many_broken_spans_stay_linear():
    text = "{x} " * 20000 + '{"a": 1}'
    with pytest.raises(ValueError):  # bounded tries: it gives up instead of scanning forever
        parse_to_obj(text)
    assert parse_to_obj("{x} " * 5 + '{"a": 1}') == {"a": 1}


def test_parse_to_code_skips_the_thoughts():
    text = "<think>draft:\n```python\nprint('draft')\n```\n</think>\n```python\nprint('final')\n```"
    assert parse_to_code(text) == "print('final')"
