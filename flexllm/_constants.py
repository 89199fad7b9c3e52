"""Every tunable default of flexllm, named in one place."""

DEFAULT_TIMEOUT = 120.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_RETRY_TIMES = 3
DEFAULT_RETRY_DELAY = 1.0
DEFAULT_CONCURRENCY = 50

#: server-sent retry hints (Retry-After, retry-after-ms, Gemini RetryInfo) are honoured up to this
MAX_RETRY_AFTER = 120.0
#: exponential backoff is capped at this multiple of retry_delay
MAX_BACKOFF_FACTOR = 8.0
#: backoff is multiplied by U(JITTER_MIN, 1)
JITTER_MIN = 0.75

#: statuses retried besides >= 500
RETRY_STATUSES = frozenset({408, 409, 429})

#: the limiter spaces request starts by (1 + this) / max_qps so that arrival jitter of up to this many
#: seconds (scheduling on a loaded host, the network) still never shows the server more than max_qps
#: starts in one second; it costs the same fraction of throughput (96% of max_qps is used)
QPS_SAFETY_MARGIN = 0.04
#: the same for a budget shared through a store (SQLite, Redis): there every start also takes a shared turn
#: (starts at least 97 % of an interval apart on the store's clock, however late a thread woke), so a smaller
#: margin keeps the server at max_qps (+1 start for network jitter) and uses 98 % of it
SHARED_QPS_SAFETY_MARGIN = 0.02

#: batch: items in flight or queued per worker (bounded memory on huge batches)
BATCH_WINDOW_PER_WORKER = 2
#: batch progress: how often a log line is written when not on a terminal (seconds)
PROGRESS_LOG_INTERVAL = 5.0

#: request headers whose values are secrets (redacted from logs and recordings)
SECRET_HEADERS = frozenset({"authorization", "x-goog-api-key", "api-key", "x-api-key", "proxy-authorization"})
