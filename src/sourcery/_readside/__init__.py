"""The read side: projections of the stored events into the user's own tables.

``projection.py`` says what a projection is (handlers by event type and actor type),
``target.py`` opens the database its tables live in and gives handlers one transaction
type on SQLite and PostgreSQL, ``tracking.py`` keeps each projection's position in that
database, ``states.py`` reads an actor's resolved state without writing, and ``runner.py``
follows the store's feed and commits each batch with its position.
"""
