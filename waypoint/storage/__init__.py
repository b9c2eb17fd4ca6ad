"""System databases: one ``SystemStore`` protocol, a PostgreSQL and a SQLite backend.

All SQL in Waypoint lives under this package.
"""
