"""pycache benchmark harness: corpora, timed steps, servers, report."""
