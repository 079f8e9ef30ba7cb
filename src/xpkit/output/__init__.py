"""output: the tables a run publishes, their schemas, files on disk, and text for a terminal.

Reads only what decide produced (results, checks, decisions) or what a run published.
"""
