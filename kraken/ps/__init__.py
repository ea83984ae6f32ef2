"""The parameter-server boundary: one protocol, an in-process implementation."""

from kraken.ps.local import LocalPS
from kraken.ps.protocol import ParameterServer

__all__ = ["LocalPS", "ParameterServer"]
