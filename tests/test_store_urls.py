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
