"""The missed-order watchdog (issue #24): no paid order goes unnoticed when its webhook never arrived.

:mod:`.patrol` lists each store's paid orders through its adapter's
:class:`~delivery_daemon.marketplaces.listing.OrderListing` and queues or raises every order without a job;
:mod:`.findings` holds what a run found, for the log, the metrics and ``delivery-daemon reconcile``. The SQL is
:mod:`delivery_daemon.storage.missed`.
"""
