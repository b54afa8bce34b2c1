"""State stores: where used response codes and outcomes are kept.

``sqlite:///PATH`` for one replica (:mod:`worker.state.sqlite`); which store a
worker uses is decided in :mod:`worker.wiring`, by the URL's scheme.
"""
