"""A SQLite budget URL with a query string or fragment: SQLite options are not read from it, so
`sqlite:///x.db?mode=ro` created a file literally named `x.db?mode=ro` (a second, unshared budget). Refused,
naming the URL without any password, before a file is made."""
import pytest

from flexllm import RateLimit


@pytest.mark.parametrize("suffix", ["?mode=ro", "?cache=shared&password=hunter2", "#main", "?"])
def test_sqlite_store_url_with_a_query_or_fragment_is_refused(tmp_path, suffix):
    url = f"sqlite:///{tmp_path}/limits.db{suffix}"
    with pytest.raises(ValueError) as info:
        RateLimit(max_qps=5, shared=url)
    message = str(info.value)
    assert "limits.db" in message and ("query" in message or "fragment" in message)
    assert "hunter2" not in message
    assert list(tmp_path.iterdir()) == []  # no stray file


def test_plain_sqlite_url_still_works(tmp_path):
    limit = RateLimit(max_qps=5, shared=f"sqlite:///{tmp_path}/limits.db")
    assert limit.shared.endswith("limits.db")


def _imports(module):
    """Every flexllm module `module` imports, at any level (lazy imports inside functions included)."""
    import ast
    import pathlib

    import flexllm

    tree = ast.parse((pathlib.Path(flexllm.__file__).parent / f"{module}.py").read_text())
    return {("." * n.level) + (n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}


def test_store_modules_form_no_import_circle():
    """`_stores` opens `_redis_store` lazily (redis is optional); `_redis_store` imported `_stores` back — a
    circle that only the lazy import kept from failing. The shared piece now sits below both."""
    assert "._stores" not in _imports("_redis_store")
    assert "._stores" not in _imports("_store_common") and "._redis_store" not in _imports("_store_common")
    assert not {i for i in _imports("_store_common") if i.startswith(".")}  # the bottom of the store modules
