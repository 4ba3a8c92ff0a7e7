"""Step 3 of an order: run the product's generator once, check what it returned, render the delivery text.

A generator runs under a time budget; CPU-bound sync generators run in a thread so the event loop keeps serving
webhooks. The result is checked against the contract (exactly ``quantity`` non-empty keys — or none when a download
is returned — and the download HTTPS) before it
is stored; a broken result is a retryable error, so the order is kept while the seller fixes the plugin.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import anyio

from delivery_daemon.errors import GeneratorError, Retry
from delivery_daemon.generators.contract import Generated, Generator, OrderContext
from delivery_daemon.generators.threads import HungThreads
from delivery_daemon.order import Content
from delivery_daemon.pipeline.stores import Product
from delivery_daemon.pipeline.template import render


def check_result(result: object, quantity: int) -> Generated:
    """``result`` if it honours the contract, else GeneratorError saying how it does not."""
    if not isinstance(result, Generated):
        raise GeneratorError(f"generator returned {type(result).__name__}, expected Generated")
    file_only = not result.keys and result.download is not None  # a file product: the link is what is sold
    if len(result.keys) != quantity and not file_only:
        raise GeneratorError(f"generator returned {len(result.keys)} keys for quantity {quantity}")
    if any(not isinstance(key, str) or not key for key in result.keys):
        raise GeneratorError("generator returned an empty or non-string key")
    if result.download is not None and not str(result.download).startswith("https://"):
        raise GeneratorError("generator returned a download URL that is not HTTPS")
    return result


async def call_generator(
    generator: Generator, context: OrderContext, *, budget: float, name: str, threads: HungThreads | None = None
) -> Generated:
    """Run ``generator.generate`` (sync ones in a thread) within ``budget`` seconds and check its result.

    Raises what the generator raised (OutOfStock, Retry, Dead, anything else), Retry when the budget ran out or
    when ``threads`` (the product's) already holds its limit of calls still running past their budget,
    and GeneratorError when the result breaks the contract.
    """
    result = await call_plugin(generator.generate, context, budget=budget, name=name, threads=threads)
    return check_result(result, context.quantity)


async def call_plugin(
    method: Callable[[Any], object], argument: object, *, budget: float, name: str, threads: HungThreads | None = None
) -> object:
    """``method(argument)`` of a plugin (a sync one in a thread of ``threads``) within ``budget`` seconds: what it
    returned, what it raised, or Retry when the budget ran out or ``threads`` holds its limit of hung calls."""
    threads = threads if threads is not None else HungThreads()
    try:
        with anyio.fail_after(budget):
            if inspect.iscoroutinefunction(method):
                result: object = await method(argument)
            else:
                result = await threads.run(method, argument, name=name)
                if inspect.isawaitable(result):
                    result = await result
    except TimeoutError:
        raise Retry(f"generator {name} took longer than {budget:g} s") from None
    except asyncio.CancelledError:
        raise
    return result


async def generate(product: Product, context: OrderContext, *, budget: float) -> Content:
    """Call the generator within ``budget`` seconds and render the product's template around its keys."""
    checked = await call_generator(
        product.generator, context, budget=budget, name=product.generator_name, threads=product.threads
    )
    return render(
        product.template,
        keys=checked.keys,
        order_id=context.order_id,
        product_id=context.product_id,
        quantity=context.quantity,
        download=checked.download,
        text=checked.text,
    )
