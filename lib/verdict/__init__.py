"""The verdict: from a query's matches to the sentence that judges them.

This package grows into the home of the whole query-to-verdict path (calibration,
verification, regions, results). It starts with what an index learns about its own
collection when it is built (:mod:`lib.verdict.learning`).
"""
