"""A system database spread over several PostgreSQL servers (``system_database_shards``).

``ShardedStore`` implements the one storage contract (``storage.protocol.Store``) over N
member stores, so the engine is the same whether it runs on one database or many. See
docs/operations/sharding.md for the design as built and how to operate it.
"""
