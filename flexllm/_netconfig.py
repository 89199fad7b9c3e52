"""Transport options of a client: an explicit proxy, TLS verification (CA bundle or SSLContext), HTTP/2.

Validated once, at client construction, with errors that name the problem (a missing optional extra, a
CA file that does not exist); a proxy password never appears in a repr, a log line or an error.
"""
from __future__ import annotations

import base64
import os
import ssl
from typing import Any, Dict, Optional, Union
from urllib.parse import unquote, urlsplit, urlunsplit

import certifi

__all__ = ["TransportOptions", "proxy_of"]

PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
_DEFAULT_PORTS = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}
Verify = Union[bool, str, "os.PathLike[str]", ssl.SSLContext]


def _masked(url: str) -> str:
    """`url` with its password replaced by `***` (the user name stays: it helps and is not a secret)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class TransportOptions:
    """proxy= / verify= / http2= for one client's connection pool. Immutable after construction."""

    __slots__ = ("proxy", "verify", "http2", "_secrets", "_ssl")

    def __init__(self, proxy: Optional[str] = None, verify: Verify = True, http2: bool = False) -> None:
        secrets = []
        if proxy is not None:
            if not isinstance(proxy, str) or not proxy:
                raise TypeError(f"proxy must be a URL string such as 'http://proxy:3128', got {type(proxy).__name__}")
            try:
                parts = urlsplit(proxy)
                parts.port  # noqa: B018 - raises ValueError for a bad port
            except ValueError:
                raise ValueError(f"proxy is not a valid URL: {_masked(proxy)!r}") from None
            scheme = parts.scheme.lower()
            if scheme not in PROXY_SCHEMES or not parts.hostname:
                raise ValueError(f"proxy must be an http://, https:// or socks5:// URL with a host, got "
                                 f"{_masked(proxy)!r}")
            if scheme.startswith("socks"):
                try:
                    import socksio  # noqa: F401
                except ImportError:
                    raise ValueError('a socks5:// proxy needs the optional extra: pip install "flexllm[socks]"') \
                        from None
            if parts.password:  # as written, unquoted, and inside a Basic Proxy-Authorization header
                user, password = unquote(parts.username or ""), unquote(parts.password)
                secrets += [parts.password, password, base64.b64encode(f"{user}:{password}".encode()).decode()]
        if isinstance(verify, os.PathLike):
            verify = os.fspath(verify)
        if isinstance(verify, str):
            if not os.path.exists(verify):
                raise ValueError(f"verify={verify!r}: no such CA bundle file or directory")
        elif not isinstance(verify, (bool, ssl.SSLContext)):
            raise TypeError(f"verify must be True, False, a CA bundle path or an ssl.SSLContext, got "
                            f"{type(verify).__name__}")
        if http2:
            try:
                import h2  # noqa: F401
            except ImportError:
                raise ValueError('http2=True needs the optional extra: pip install "flexllm[http2]"') from None
        object.__setattr__(self, "proxy", proxy)
        object.__setattr__(self, "verify", verify)
        object.__setattr__(self, "http2", bool(http2))
        object.__setattr__(self, "_secrets", tuple(s for s in secrets if s))
        object.__setattr__(self, "_ssl", None)
        if isinstance(verify, str):  # a file that is not a CA bundle fails here, not on the first request
            try:
                self.ssl_context()
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(f"verify={verify!r} is not a usable CA bundle ({exc})") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("TransportOptions is immutable")

    def __repr__(self) -> str:
        verify = self.verify if not isinstance(self.verify, ssl.SSLContext) else "SSLContext(...)"
        proxy = _masked(self.proxy) if self.proxy else None
        return f"TransportOptions(proxy={proxy!r}, verify={verify!r}, http2={self.http2})"

    @property
    def proxy_at(self) -> Optional[str]:
        """The proxy's `host:port` (never its credentials), for errors about reaching it; None without one."""
        if not self.proxy:
            return None
        parts = urlsplit(self.proxy)
        host = parts.hostname or ""
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def has_secrets(self) -> bool:
        return bool(self._secrets)

    def redact(self, text: str) -> str:
        """`text` without the proxy password (errors from the proxy may quote its URL)."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def ssl_context(self) -> Union[bool, ssl.SSLContext]:
        """What httpx's `verify=` gets: one context, built once (certifi's CAs by default), or False."""
        verify = self.verify
        if isinstance(verify, ssl.SSLContext) or verify is False:
            return verify
        if self._ssl is None:
            if isinstance(verify, str):
                ctx = ssl.create_default_context(**({"capath": verify} if os.path.isdir(verify) else {"cafile": verify}))
            else:
                ctx = ssl.create_default_context(cafile=certifi.where())
            object.__setattr__(self, "_ssl", ctx)
        return self._ssl

    def client_kwargs(self) -> Dict[str, Any]:
        """httpx.Client keyword arguments for the proxy and HTTP/2 (verify goes through `ssl_context`)."""
        out: Dict[str, Any] = {}
        if self.proxy:
            out["proxy"] = self.proxy
        if self.http2:
            out["http2"] = True
        return out


_ENV_PROXY_NAMES = {"http://": "HTTP_PROXY", "https://": "HTTPS_PROXY", "all://": "ALL_PROXY"}


def proxy_of(exc: Exception, proxy_at: Optional[str]) -> Optional[str]:
    """The proxy a failed connect went to: proxy='s host:port, else the environment proxy httpx chose for the
    request's URL (its variable named; NO_PROXY honoured the way httpx does), else None (a direct connection)."""
    if proxy_at:
        return proxy_at
    try:
        from httpx._utils import URLPattern, get_environment_proxies

        found = get_environment_proxies()
        url = exc.request.url if found else None  # type: ignore[attr-defined]
    except (RuntimeError, ImportError, AttributeError):  # no request attached, or an httpx without these helpers
        return None
    for pattern, proxy in sorted(((URLPattern(k), v) for k, v in found.items()),
                                 key=lambda kv: kv[0]):  # httpx's own priority order
        if pattern.matches(url):
            try:
                at = TransportOptions(proxy=proxy).proxy_at if proxy else None
            except (TypeError, ValueError):
                return None
            return f"{at} (from {_ENV_PROXY_NAMES.get(pattern.pattern, 'the environment')})" if at else None
    return None
