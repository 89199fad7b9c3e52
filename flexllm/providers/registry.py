"""The provider registry: a name → its adapter factory, detection rule and key environment variables.

Clients (`LLMClient`, the CLI's `--provider` choices, auto-detection, the pool) and the mock server read
this table; nothing else in flexllm names a provider. Adapter modules register themselves on import.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple
from urllib.parse import urlsplit

from .base import ProviderAdapter

__all__ = ["GENERIC_KEY_ENV", "Provider", "detect", "foreign_params", "get", "make_adapter", "names", "register",
           "resolve_key"]

#: the one environment variable every provider reads (after its own)
GENERIC_KEY_ENV = "FLEXLLM_API_KEY"
#: api_key values that mean "no key given"
NO_KEY = (None, "", "EMPTY")


@dataclass(frozen=True)
class Provider:
    """One provider: how to build its adapter and how to recognise it.

    `adapter(base_url=, api_key=, model=, thinking=, default_headers=, **options)` builds the adapter
    (api_key already resolved from the environment). Detection (`provider="auto"`): a base_url whose host
    ends with one of `hosts`; without a base_url, a model starting with one of `model_prefixes`, or an
    api_key starting with one of `key_prefixes`; or a truthy value of one of `triggers` (e.g.
    `use_vertex_ai`). The `fallback` provider is chosen when nothing matches.
    """

    name: str
    adapter: Callable[..., ProviderAdapter]
    hosts: Tuple[str, ...] = ()
    model_prefixes: Tuple[str, ...] = ()
    key_prefixes: Tuple[str, ...] = ()
    #: environment variables holding this provider's key, first set wins; FLEXLLM_API_KEY comes after them
    env_keys: Tuple[str, ...] = ()
    #: read env_keys only when the base_url is unset or one of `hosts` (a shared dialect such as OpenAI's,
    #: spoken by many vendors' servers: their key must never travel to another vendor)
    env_keys_own_hosts_only: bool = False
    #: constructor keywords only this provider understands (LLMClient passes them on)
    options: Tuple[str, ...] = ()
    triggers: Tuple[str, ...] = ()
    #: request parameters no other provider understands (the others reject them with a ValueError)
    exclusive_params: frozenset = frozenset()
    fallback: bool = False

    def owns_host(self, base_url: Optional[str]) -> bool:
        """Whether `base_url`'s host is one of this provider's own hosts."""
        if not base_url or not self.hosts:
            return False
        host = (urlsplit(base_url).hostname or "").lower()
        # "." and "-" boundaries: api.anthropic.com, us-central1-aiplatform.googleapis.com; never evilanthropic.com
        return any(host == h or host.endswith(("." + h, "-" + h)) for h in self.hosts)


_REGISTRY: Dict[str, Provider] = {}


def register(provider: Provider, *, replace: bool = False) -> Provider:
    """Add `provider` to the registry (ValueError if the name is taken, unless `replace`)."""
    if provider.name in _REGISTRY and not replace:
        raise ValueError(f"provider {provider.name!r} is already registered")
    if provider.name == "auto":
        raise ValueError("'auto' is not a provider name")
    _REGISTRY[provider.name] = provider
    return provider


def names() -> Tuple[str, ...]:
    """Registered provider names, in registration order."""
    return tuple(_REGISTRY)


def get(name: str) -> Provider:
    """The provider called `name`; ValueError listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown provider {name!r}; known: {('auto',) + names()}") from None


def _model_name(model: Optional[str]) -> str:
    name = (model or "").lower()
    for prefix in ("models/", "google/", "anthropic/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def detect(base_url: Optional[str], model: Optional[str], api_key: Optional[str] = None,
           options: Optional[Dict[str, Any]] = None) -> str:
    """The provider `provider="auto"` means for these settings (see `Provider` for the rule)."""
    providers = list(_REGISTRY.values())
    for p in providers:
        if any((options or {}).get(t) for t in p.triggers):
            return p.name
    if base_url:
        for p in providers:
            if p.owns_host(base_url):
                return p.name
    else:
        name = _model_name(model)
        for p in providers:
            if p.model_prefixes and name.startswith(p.model_prefixes):
                return p.name
        key = (api_key or "").strip()
        for p in providers:
            if p.key_prefixes and key.startswith(p.key_prefixes):
                return p.name
    for p in providers:
        if p.fallback:
            return p.name
    raise ValueError(f"cannot tell the provider from base_url={base_url!r}, model={model!r}; pass provider=")


def resolve_key(provider: Provider, api_key: Optional[str], base_url: Optional[str]) -> Optional[str]:
    """The key to send: the given one, else the provider's own env vars, else FLEXLLM_API_KEY (or None).

    A provider never reads another provider's variables, so an ANTHROPIC_API_KEY cannot reach OpenAI, and
    never sends its own variable's key to a host that belongs to another provider (provider="gemini" with
    an api.openai.com base_url gets no GEMINI_API_KEY).
    """
    if api_key not in NO_KEY:
        return api_key
    foreign = any(p.owns_host(base_url) for n, p in _REGISTRY.items() if n != provider.name)
    if provider.env_keys and not foreign and \
            (not provider.env_keys_own_hosts_only or not base_url or provider.owns_host(base_url)):
        for env in provider.env_keys:
            value = (os.environ.get(env) or "").strip()
            if value:
                return value
    value = (os.environ.get(GENERIC_KEY_ENV) or "").strip()
    return value or None


def make_adapter(name: str, *, base_url: Optional[str] = None, api_key: Optional[str] = None,
                 model: Optional[str] = None, thinking: Any = None, default_headers: Any = None,
                 **options: Any) -> ProviderAdapter:
    """Build provider `name`'s adapter, with its key resolved and only the options it understands."""
    provider = get(name)
    own = {k: v for k, v in options.items() if k in provider.options}
    if isinstance(base_url, str):  # a CRLF .env or a pasted value: stripped like a key (clean_secret)
        base_url = base_url.strip() or None
        if base_url and ("?" in base_url or "#" in base_url):  # paths are appended: they would land after it
            raise ValueError("base_url holds a query string or fragment ('?…' / '#…'): request paths such as "
                             "/chat/completions are appended to base_url, so give it without one (Azure OpenAI: "
                             "https://RESOURCE.openai.azure.com/openai/v1)")
    return provider.adapter(base_url=base_url, api_key=resolve_key(provider, api_key, base_url), model=model,
                            thinking=thinking, default_headers=default_headers, **own)


def foreign_params(name: str, params: Iterable[str]) -> List[str]:
    """The parameters in `params` that belong to another provider than `name` (sorted)."""
    others = [p.exclusive_params for n, p in _REGISTRY.items() if n != name and p.exclusive_params]
    if not others:
        return []
    return sorted(k for k in params if any(k in ex for ex in others))
