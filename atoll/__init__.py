"""Code shared by the agent and the coordinator.

The API itself lives in `atoll.v1`, generated from protos/ by
`make proto`; everything else in this package is written by hand.
"""

__version__ = "0.1.0"
