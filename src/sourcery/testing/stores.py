"""The contract every store keeps, as a pytest suite a backend's tests subclass.

As eventsourcing ships its recorder tests, a store (ours or a third party's) proves it
keeps the :class:`~sourcery._stores.base.Store` contract by subclassing
:class:`StoreContract` in a test module and opening a fresh store in one hook::

    from sourcery.testing.stores import StoreContract

    class TestMyStore(StoreContract):
        async def create_store(self):
            return await MyStore.open("my://fresh-database")

Set ``persistent = True`` and implement ``reopen_store`` to also run the tests of
durability and of two stores writing one database. The tests are ``async``: run them with
pytest-asyncio in auto mode (or mark the class ``pytest.mark.asyncio``). This module needs
pytest and hypothesis; ``sourcery.testing`` itself does not.
"""

from __future__ import annotations

from sourcery.testing._store_feed import FeedContract
from sourcery.testing._store_kit import StoreHarness
from sourcery.testing._store_reads import ReadContract
from sourcery.testing._store_writes import WriteContract

__all__ = ["FeedContract", "ReadContract", "StoreContract", "StoreHarness", "WriteContract"]


class StoreContract(WriteContract, ReadContract, FeedContract):
    """Every test of the store contract; implement :meth:`create_store`."""
