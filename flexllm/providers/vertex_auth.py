"""Bearer tokens for Vertex AI: a fixed access token, or google-auth credentials refreshed before expiry."""
from __future__ import annotations

import datetime
import os
import threading
import time
from typing import Any, Callable, Optional

from ..errors import APIConnectionError, AuthenticationError, LLMError

__all__ = ["VertexTokenProvider"]

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


class VertexTokenProvider:
    """Callable returning a valid bearer token. Thread-safe: one refresh at a time, none while fresh.

    With `access_token` it returns that string. Otherwise it uses `credentials` (or
    `google.auth.default()`), refreshing when the token expires within `refresh_margin` seconds.
    Needs the optional extra: `pip install "flexllm[vertex]"`.
    """

    def __init__(self, access_token: Optional[str] = None, credentials: Any = None, *,
                 clock: Callable[[], float] = time.time, refresh_margin: float = 300.0,
                 request_factory: Optional[Callable[[], Any]] = None) -> None:
        self._token = access_token
        self._credentials = credentials
        self._clock = clock
        self._margin = refresh_margin
        self._request_factory = request_factory
        self._lock = threading.Lock()
        self.refreshes = 0
        if access_token is None and credentials is None:
            self._credentials = self._default_credentials()

    @staticmethod
    def _default_credentials() -> Any:
        try:
            import google.auth
        except ImportError:
            raise ValueError('Vertex AI needs google-auth: pip install "flexllm[vertex]", '
                             "or pass access_token=") from None
        from google.auth.exceptions import DefaultCredentialsError

        try:
            credentials, _ = google.auth.default(scopes=SCOPES)
        except DefaultCredentialsError:  # its text may quote a broken key file: name what to configure instead
            path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
            found = f"GOOGLE_APPLICATION_CREDENTIALS={path} could not be loaded as credentials" if path else \
                "no Google Cloud credentials were found"
            raise ValueError(f"Vertex AI: {found}; pass access_token= or credentials=, set "
                             "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or run "
                             "`gcloud auth application-default login`") from None
        return credentials

    def _stale(self) -> bool:
        creds = self._credentials
        if getattr(creds, "token", None) is None:
            return True
        expiry = getattr(creds, "expiry", None)
        if expiry is None:
            return False
        if isinstance(expiry, datetime.datetime):
            if expiry.tzinfo is None:  # google-auth uses naive UTC datetimes
                expiry = expiry.replace(tzinfo=datetime.timezone.utc)
            expiry = expiry.timestamp()
        return float(expiry) - self._clock() <= self._margin

    def _request(self) -> Any:
        if self._request_factory is not None:
            return self._request_factory()
        try:
            from google.auth.transport.requests import Request
        except ImportError:
            raise LLMError('refreshing Vertex AI credentials needs google-auth[requests]: '
                           'pip install "flexllm[vertex]"', provider="gemini") from None
        return Request()

    def __call__(self) -> str:
        if self._credentials is None:
            return self._token or ""
        if self._stale():
            with self._lock:
                if self._stale():
                    self._refresh()
                    self.refreshes += 1
        return self._credentials.token

    def _refresh(self) -> None:
        """Refresh the credentials; google-auth's failures as flexllm's types (a refused key, no network)."""
        try:
            self._credentials.refresh(self._request())
        except Exception as exc:
            try:
                from google.auth import exceptions as gae
            except ImportError:  # custom credentials without google-auth: their own error stands
                raise exc from None
            reason = str(exc.args[0] if exc.args else exc)[:200]  # google's words, never the credentials
            if isinstance(exc, gae.RefreshError):
                raise AuthenticationError(f"Vertex AI: Google refused to refresh the access token ({reason}); "
                                          "check the service account key or run `gcloud auth application-default "
                                          "login`", status_code=401, provider="gemini") from None
            if isinstance(exc, gae.TransportError):
                raise APIConnectionError(f"Vertex AI: could not reach Google to refresh the access token "
                                         f"({reason})", provider="gemini") from None
            raise
