"""The contract's version, which is also the version of this distribution."""

CONTRACT_VERSION = "1.0.0"
"""Major: a change that can break publishers; minor: additions they may ignore."""
