"""The one exception tree of the engine.

Every failure the engine reasons about is one of these. The split that matters is
`RetryableError` (try again later, perhaps after a pause) versus `FatalError` (retrying
cannot help). ccxt's own exceptions are mapped onto this tree at the gateway boundary
(`engine.market.ccxt_errors`), so nothing above the gateway ever imports ccxt.
"""

from __future__ import annotations

from dataclasses import dataclass


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class RetryableError(EngineError):
    """The same call may succeed later; the retry policy decides when."""


class FatalError(EngineError):
    """Retrying the same call cannot succeed."""


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in the config directory, located precisely enough to fix by hand."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path or '<root>'}: {self.message}"


class ConfigError(FatalError):
    """The config directory is invalid; carries every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


# --- plugins --------------------------------------------------------------------------------


class PluginLoadError(FatalError):
    """A plugin's entry point could not be imported or is not a Strategy."""


class StrategyError(EngineError):
    """A strategy raised while evaluating; it is counted and isolated, never propagated."""

    def __init__(self, instance: str, symbol: str, cause: BaseException) -> None:
        self.instance = instance
        self.symbol = symbol
        super().__init__(f"strategy {instance!r} failed on {symbol}: {type(cause).__name__}: {cause}")


# --- market data ----------------------------------------------------------------------------


class MarketError(EngineError):
    """Base for everything that goes wrong while talking to a market."""


class TransportError(MarketError, RetryableError):
    """The request did not get a usable answer: network, timeout, 5xx, unparsable body.

    These are the failures the circuit breaker counts.
    """


class NetworkError(TransportError):
    """Connection refused, reset, DNS failure."""


class RequestTimeout(TransportError):
    """The exchange did not answer in time."""


class ExchangeUnavailable(TransportError):
    """The exchange answered 5xx or says it is under maintenance."""


class BadResponse(TransportError):
    """The exchange answered, but the body could not be parsed or is structurally wrong."""


class RateLimited(MarketError, RetryableError):
    """HTTP 429: the exchange asks us to slow down for `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class IPBanned(RateLimited):
    """HTTP 418: the exchange banned this IP for a while because 429s were ignored."""


class ExchangePaused(MarketError, RetryableError):
    """A Retry-After pause is in force; no request may be sent until `until`."""

    def __init__(self, exchange: str, until: float) -> None:
        self.exchange = exchange
        self.until = until
        super().__init__(f"{exchange}: paused by the exchange until t={until:.0f}")


class CircuitOpen(MarketError, RetryableError):
    """The circuit breaker is open; the call was refused without touching the network."""

    def __init__(self, exchange: str, retry_at: float) -> None:
        self.exchange = exchange
        self.retry_at = retry_at
        super().__init__(f"{exchange}: circuit open until t={retry_at:.0f}")


class RequestError(MarketError, FatalError):
    """The exchange rejected the request itself (bad parameters, unsupported call)."""


class BadSymbol(RequestError):
    """The market does not exist on this exchange."""


class DataUnavailable(MarketError, FatalError):
    """The source cannot provide this kind of data at all (e.g. funding in a CSV replay)."""


class EdgesMismatch(MarketError):
    """A replay file's parsed rows do not begin and end with the rows read from its ends, so a
    plan made from those ends may be wrong; the replay parses every file and plans again."""


# --- state ----------------------------------------------------------------------------------


class StateError(FatalError):
    """The state directory cannot be used."""


class StateLocked(StateError):
    """Another engine holds the state directory's lock."""
