"""What SQLite and PostgreSQL share: one schema description, one set of algorithms.

The algorithms (``reads``, ``writes``, ``feed``) are sans-I/O generators: they yield
:class:`~sourcery._stores.sql.dialect.Query` objects and get each one's result back, so the
same code runs inside SQLite's connection thread and over asyncpg's pool. A
:class:`~sourcery._stores.sql.dialect.Dialect` holds only what differs between databases.
"""
