"""The generate step: the generator contract is enforced, and a generator gets a time budget."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from delivery_daemon.errors import GeneratorError, Retry
from delivery_daemon.generators.contract import Generated, OrderContext
from delivery_daemon.pipeline.generate import check_result, generate
from delivery_daemon.pipeline.stores import Product

CONTEXT = OrderContext(
    store="shop", marketplace="softstore", order_id="o1", product_id="p1", quantity=2, idempotency_key="shop:o1"
)


def product(generator: Any, template: str = "{order_id}: {keys}") -> Product:
    return Product(generator_name="test", generator=generator, options={}, template=template)


class Fixed:
    def __init__(self, result: Any) -> None:
        self.result = result
        self.calls: list[OrderContext] = []

    def generate(self, order: OrderContext) -> Any:
        self.calls.append(order)
        return self.result


def test_check_result_accepts_contract() -> None:
    """Exactly ``quantity`` non-empty keys and an HTTPS download pass unchanged."""
    result = Generated(["A", "B"], text="t", download="https://cdn.example/x")
    assert check_result(result, 2) is result


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        (Generated(["A"]), "1 keys for quantity 2"),
        (Generated(["A", "B", "C"]), "3 keys for quantity 2"),
        (Generated(["A", ""]), "empty or non-string key"),
        (Generated(["A", 5]), "empty or non-string key"),  # type: ignore[list-item]  # a non-string key is the case under test
        (Generated(["A", "B"], download="http://cdn.example/x"), "not HTTPS"),
        (Generated(["A", "B"], download="ftp://cdn.example/x"), "not HTTPS"),
        (["A", "B"], "expected Generated"),
        (None, "expected Generated"),
    ],
)
def test_check_result_refuses(result: Any, problem: str) -> None:
    """Wrong key count, empty keys, a non-HTTPS download or a wrong type break the contract."""
    with pytest.raises(GeneratorError, match=problem):
        check_result(result, 2)


async def test_generate_sync_renders_template() -> None:
    """A sync generator is called once with the order context and its keys are rendered into the template."""
    generator = Fixed(Generated(["K1", "K2"]))
    content = await generate(product(generator), CONTEXT, budget=5)
    assert content.text == "o1: K1, K2"
    assert content.keys == ("K1", "K2")
    assert generator.calls == [CONTEXT]


async def test_generate_async_generator() -> None:
    """An ``async def generate`` is awaited."""

    class Async:
        async def generate(self, order: OrderContext) -> Generated:
            return Generated([f"{order.order_id}-{i}" for i in range(order.quantity)], download="https://x.example/f")

    content = await generate(product(Async(), "{keys} {download}"), CONTEXT, budget=5)
    assert content.text == "o1-0, o1-1 https://x.example/f"


async def test_generate_wrong_count_is_generator_error() -> None:
    """A contract break surfaces as GeneratorError (the worker keeps the order and retries)."""
    with pytest.raises(GeneratorError):
        await generate(product(Fixed(Generated(["only-one"]))), CONTEXT, budget=5)


async def test_async_generator_over_budget_is_retry() -> None:
    """An async generator that does not answer within the budget is abandoned with Retry."""
    never = asyncio.Event()

    class Hanging:
        async def generate(self, order: OrderContext) -> Generated:
            await never.wait()
            raise AssertionError("unreachable")

    with pytest.raises(Retry, match=r"took longer than 0\.2 s"):
        await generate(product(Hanging()), CONTEXT, budget=0.2)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # let the abandoned thread finish


async def test_sync_generator_over_budget_is_retry(release: threading.Event) -> None:
    """A blocking sync generator runs in a thread; past the budget the call is abandoned with Retry."""

    class Blocking:
        def generate(self, order: OrderContext) -> Generated:
            release.wait(30)
            return Generated(["late", "late"])

    with pytest.raises(Retry, match="took longer"):
        await generate(product(Blocking()), CONTEXT, budget=0.2)
