"""The built-in Kalshi exchange simulator.

It speaks today's market-data WebSocket protocol faithfully enough (signed handshakes,
commands and their answers, sequenced data, heartbeats, abrupt endings) to back the
demo, the collector's tests, the benchmark and the in-cluster fake exchange.
"""

from ssmd_collector.sim.market import mve_universe, universe
from ssmd_collector.sim.protocol import ErrorCode, SecondSubscribe
from ssmd_collector.sim.server import Ending, SimConfig, SimServer, SimSession

__all__ = [
    "Ending",
    "ErrorCode",
    "SecondSubscribe",
    "SimConfig",
    "SimServer",
    "SimSession",
    "mve_universe",
    "universe",
]
