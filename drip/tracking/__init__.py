"""Our own open and click tracking: signed links, the endpoints, the Redis stream and its drain.

Works on every email backend: nothing here depends on the provider. See docs/tracking.md.
"""
