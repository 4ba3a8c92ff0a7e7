"""Fault injection for the reference SoftStore marketplace.

Delivery faults (fail / drop / slow) share one FIFO queue, so ``fail_next_deliveries(2)`` followed by
``drop_next_deliveries(1)`` makes the next three delivery POSTs fail, fail, drop. Order-info faults have their
own queue, and so do product-update faults and "webhook never sent" faults (the marketplace takes the order and
its payment but never posts the webhook: the missed-order watchdog must find it). A fault is consumed by a request
that got past the ``down`` switch and authentication (a webhook fault: by the next order placed), and is counted in
``injected`` when it is applied (``tokens_expired`` counts ``expire_tokens()`` calls, ``down`` counts requests
answered 503 by the switch).

A lock guards the queues so a test thread may arm faults while the server loop consumes them.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

DeliveryFaultKind = Literal["fail", "drop", "slow"]
INJECTED_KEYS = (
    "delivery_fail",
    "delivery_drop",
    "delivery_slow",
    "order_info_fail",
    "product_update_fail",
    "webhook_never_sent",
    "tokens_expired",
    "down",
)


@dataclass(frozen=True)
class DeliveryFault:
    """An armed delivery fault: answer ``status`` (fail), close the connection (drop), answer late (slow)."""

    kind: DeliveryFaultKind
    status: int = 500
    seconds: float = 0.0


class Faults:
    """Faults to inject into the marketplace's API, consumed in the order they were armed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deliveries: deque[DeliveryFault] = deque()
        self._order_info: deque[int] = deque()
        self._product_updates: deque[int] = deque()
        self._webhooks_never_sent = 0
        self.is_down = False
        self.token_epoch = 0
        self.injected: dict[str, int] = dict.fromkeys(INJECTED_KEYS, 0)

    # -- arming -------------------------------------------------------------------------------------------
    def fail_next_deliveries(self, n: int, status: int = 500) -> None:
        """The next ``n`` delivery POSTs answer ``status``, not delivering (429 adds ``Retry-After: 1``)."""
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        self._arm(DeliveryFault("fail", status=status), n)

    def drop_next_deliveries(self, n: int) -> None:
        """The next ``n`` delivery POSTs get their connection closed with no response and no delivery."""
        self._arm(DeliveryFault("drop"), n)

    def slow_next_deliveries(self, n: int, seconds: float) -> None:
        """The next ``n`` delivery POSTs are processed at once but answered ``seconds`` later."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self._arm(DeliveryFault("slow", seconds=seconds), n)

    def fail_next_order_info(self, n: int, status: int = 500) -> None:
        """The next ``n`` ``GET /orders/info/{id}`` answer ``status``."""
        self._arm_status(self._order_info, n, status)

    def fail_next_product_updates(self, n: int, status: int = 500) -> None:
        """The next ``n`` ``POST /products/update/{id}`` answer ``status`` and change nothing."""
        self._arm_status(self._product_updates, n, status)

    def never_send_next_webhooks(self, n: int) -> None:
        """The next ``n`` orders placed are paid and listed, but their webhook is never sent."""
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            self._webhooks_never_sent += n

    def expire_tokens(self) -> None:
        """Every access token issued so far stops working now."""
        with self._lock:
            self.token_epoch += 1
            self.injected["tokens_expired"] += 1

    def down(self, is_down: bool = True) -> None:
        """While down, every ``/api/v1`` request answers 503."""
        self.is_down = is_down

    def clear(self) -> None:
        """Disarm every pending fault and bring the API back up (counters are kept)."""
        with self._lock:
            self._deliveries.clear()
            self._order_info.clear()
            self._product_updates.clear()
            self._webhooks_never_sent = 0
            self.is_down = False

    # -- consuming (the marketplace calls these) -----------------------------------------------------------
    def take_delivery_fault(self) -> DeliveryFault | None:
        with self._lock:
            if not self._deliveries:
                return None
            fault = self._deliveries.popleft()
            self.injected[f"delivery_{fault.kind}"] += 1
            return fault

    def take_order_info_fault(self) -> int | None:
        return self._take_status(self._order_info, "order_info_fail")

    def take_product_update_fault(self) -> int | None:
        return self._take_status(self._product_updates, "product_update_fail")

    def take_webhook_fault(self) -> bool:
        """True (and counted) when this order's webhook must never be sent."""
        with self._lock:
            if self._webhooks_never_sent == 0:
                return False
            self._webhooks_never_sent -= 1
            self.injected["webhook_never_sent"] += 1
            return True

    def _arm_status(self, queue: deque[int], n: int, status: int) -> None:
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            queue.extend([status] * n)

    def _take_status(self, queue: deque[int], counter: str) -> int | None:
        with self._lock:
            if not queue:
                return None
            self.injected[counter] += 1
            return queue.popleft()

    def note_down(self) -> None:
        with self._lock:
            self.injected["down"] += 1

    def pending(self) -> dict[str, Any]:
        """What is still armed (for the control API)."""
        with self._lock:
            return {
                "deliveries": [fault.kind for fault in self._deliveries],
                "order_info": len(self._order_info),
                "product_updates": len(self._product_updates),
                "webhooks_never_sent": self._webhooks_never_sent,
                "down": self.is_down,
            }

    def _arm(self, fault: DeliveryFault, n: int) -> None:
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            self._deliveries.extend([fault] * n)
