"""engine-plugin-donchian: a Donchian-channel breakout strategy for signal-engine.

The engine finds the strategy through the `engine.strategies` entry point declared in
pyproject.toml; importing this package is not needed for that.
"""

from engine_donchian.strategy import DonchianParams, DonchianStrategy

__all__ = ["DonchianParams", "DonchianStrategy"]
__version__ = "0.1.0"
