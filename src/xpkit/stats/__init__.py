"""Pure statistics on sufficient statistics (:class:`xpkit.moments.Moments`).

Nothing in this package knows that SQL exists: every function takes moments (or numbers)
and returns small immutable results.
"""
