"""Whether the Hugging Face Hub can be reached, asked once and quickly, and the one-line advice when it cannot.

`datasets` retries an unreachable Hub for about 30 s before failing with a long traceback; `require_hub` asks
once (a few seconds at most) first, so a command without network stops at once and says what to do.
"""

from __future__ import annotations

import os

PROBE_TIMEOUT_S = 5.0
OFFLINE_ADVICE = "set HF_HUB_OFFLINE=1 to use a copy in the Hugging Face cache, or pass a local copy (a folder or file) instead"
UPLOAD_ADVICE = "nothing was uploaded: check the network (and HF_ENDPOINT), then run the same command again"
NETWORK_ERROR_NAMES = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "TimeoutException",
        "NetworkError",
        "ConnectionError",
        "OfflineModeIsEnabled",
    }
)


class HubUnreachableError(ConnectionError):
    """The Hub could not be reached; the message says what was wanted and what the user can do."""


def hub_endpoint() -> str:
    """The Hub address in use (`HF_ENDPOINT`, else huggingface.co)."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def is_offline() -> bool:
    """Whether the user asked for offline mode (`HF_HUB_OFFLINE=1`)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in {
        "1",
        "true",
        "yes",
    }


def is_network_error(error: BaseException) -> bool:
    """Whether `error`, or an exception it was raised from, is a failure to reach a server."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if any(cls.__name__ in NETWORK_ERROR_NAMES for cls in type(error).__mro__):
            return True
        error = error.__cause__ or error.__context__
    return False


def one_line(error: BaseException | str) -> str:
    """`error`'s text with every run of whitespace (newlines included) made one space."""
    return " ".join(str(error).split())


def unreachable_message(what: str, error: BaseException | None = None, advice: str = OFFLINE_ADVICE) -> str:
    """`could not reach the Hugging Face Hub at <endpoint> to <what> (<cause>); <advice>.`"""
    cause = "" if error is None else f" ({type(error).__name__}: {one_line(error)[:160]})"
    return f"could not reach the Hugging Face Hub at {hub_endpoint()} to {what}{cause}; {advice}."


def require_hub(what: str) -> None:
    """Raise `HubUnreachableError` at once if the Hub does not answer (nothing is asked in offline mode)."""
    from huggingface_hub import get_session

    if is_offline():
        return
    try:
        get_session().head(hub_endpoint(), timeout=PROBE_TIMEOUT_S)
    except (
        Exception
    ) as error:  # any failure to get an answer (refused, DNS, timeout, proxy) means unreachable
        raise HubUnreachableError(unreachable_message(what, error)) from None


__all__ = [
    "OFFLINE_ADVICE",
    "UPLOAD_ADVICE",
    "HubUnreachableError",
    "hub_endpoint",
    "is_network_error",
    "is_offline",
    "one_line",
    "require_hub",
    "unreachable_message",
]
