"""The operations layer: what ``DBOS``, ``DBOSClient``, the admin API and the CLI can do,
each written once as a flow over an ``Ops`` and driven sync or async by the surface."""
