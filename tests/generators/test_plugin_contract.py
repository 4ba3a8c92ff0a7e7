"""Every item of the generator contract in docs/plugins.md, one ``test_contract_<heading>`` test (or more) each."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from delivery_daemon_plugins.pattern import PatternGenerator

from delivery_daemon.cli import main
from delivery_daemon.errors import ConfigError, GeneratorError, PluginError, Retry
from delivery_daemon.generators.contract import Generated, OrderContext
from delivery_daemon.generators.discovery import check_plugin, discover
from delivery_daemon.pipeline.generate import call_generator
from delivery_daemon.storage.models import JobState
from delivery_daemon.testing import build_generator, fake_order

SCRIPTED = """
import anyio
from pydantic import BaseModel, ConfigDict

from delivery_daemon.generators.contract import Dead, Generated, OutOfStock, Retry

__version__ = "0.3"


class ScriptedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: str = "ok"


class Scripted:
    name = "scripted"
    Options = ScriptedOptions
    template = "default template: {keys} {text}"

    def __init__(self, options, resources):
        self.mode = options.mode
        self.resources = resources

    async def generate(self, order):
        mode = self.mode
        if mode == "out_of_stock":
            raise OutOfStock("empty shelf")
        if mode == "retry":
            raise Retry("key server busy", after=42)
        if mode == "dead":
            raise Dead("refused by the seller's system")
        if mode == "boom":
            raise RuntimeError("plugin bug")
        if mode == "hang":
            await anyio.sleep(3600)
        if mode == "wrong_count":
            return Generated(keys=["ONE"] * (order.quantity + 1))
        if mode == "http_download":
            return Generated(keys=["K"] * order.quantity, download="http://files.example.com/f.zip")
        if mode == "context":
            r = self.resources
            return Generated(keys=["C"] * order.quantity, download="https://files.example.com/f.zip",
                             text="|".join([str(order.buyer_email), order.idempotency_key, order.marketplace,
                                            order.options["mode"], r.store, str(r.product_id)]))
        return Generated(keys=[f"OK-{i}" for i in range(order.quantity)], text="thanks")


GENERATORS = [Scripted]
"""

MODES = ("ok", "out_of_stock", "retry", "dead", "boom", "hang", "wrong_count", "http_download", "context")


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "plugins"
    directory.mkdir()
    (directory / "scripted.py").write_text(SCRIPTED)
    return directory


def _config(tmp_path: Path, product: dict[str, Any], plugins: dict[str, Any] | None = None) -> str:
    document: dict[str, Any] = {
        "database": {"url": f"sqlite:///{tmp_path / 'cfg.db'}"},
        "stores": [
            {
                "name": "main",
                "marketplace": "softstore",
                "api_url": "https://api.example.com/api/v1",
                "api_key": "k" * 20,
                "products": {"p1": product},
            }
        ],
    }
    if plugins:
        document["plugins"] = plugins
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err.strip()


# -- name, Options, Resources --------------------------------------------------------------------------------------


@pytest.mark.contract("name")
def test_contract_name(tmp_path: Path) -> None:
    """A class whose name differs from its registration, or two plugins with one name, fail clearly when used."""
    with pytest.raises(PluginError, match="class attribute name is 'pattern', expected 'other'"):
        check_plugin(PatternGenerator, "other", "test")
    (tmp_path / "dup.py").write_text(SCRIPTED.replace('name = "scripted"', 'name = "pattern"'))
    found = discover(tmp_path)
    with pytest.raises(PluginError, match=r"'pattern' is provided twice: by entry point .* and by file .*dup\.py"):
        found["pattern"]


@pytest.mark.contract("Options")
def test_contract_options() -> None:
    """The plugin receives its validated Options instance; unknown option keys are refused."""
    generator = build_generator(PatternGenerator, {"prefix": "Z-"})
    assert isinstance(generator, PatternGenerator) and generator.options.prefix == "Z-"
    with pytest.raises(ConfigError, match=r"options\.colour: unknown key; expected one of "):
        build_generator(PatternGenerator, {"colour": "red"})


@pytest.mark.contract("Resources")
def test_contract_resources_database_closed_until_started(plugin_dir: Path) -> None:
    """Before the daemon opened its database (check-config), resources.engine is a clear PluginError."""
    scripted = discover(plugin_dir)["scripted"].plugin
    generator: Any = build_generator(scripted, {"mode": "ok"})
    assert (generator.resources.store, generator.resources.product_id) == ("test-store", "product-1")
    with pytest.raises(PluginError, match="database is not open"):
        _ = generator.resources.engine


@pytest.mark.contract("generate")
async def test_contract_generate_sync_and_async(plugin_dir: Path) -> None:
    """Both a sync generate (pattern, run in a thread) and an async one (scripted) are called the same way."""
    scripted = discover(plugin_dir)["scripted"].plugin
    assert (
        await call_generator(build_generator(scripted, {}), fake_order(quantity=2), budget=5, name="scripted")
    ).keys == ("OK-0", "OK-1")
    assert (
        len(
            (
                await call_generator(
                    build_generator(PatternGenerator), fake_order(quantity=2), budget=5, name="pattern"
                )
            ).keys
        )
        == 2
    )


@pytest.mark.contract("Generated", "Wrong results")
def test_contract_generated_checks() -> None:
    """A file product may return only a download; no keys without a download, or a wrong count, is refused."""
    from delivery_daemon.pipeline.generate import check_result

    assert check_result(Generated(keys=[], download="https://f.example.com/a"), 3).keys == ()
    with pytest.raises(GeneratorError, match="0 keys for quantity 3"):
        check_result(Generated(keys=[]), 3)
    with pytest.raises(GeneratorError, match="empty or non-string key"):
        check_result(Generated(keys=["a", ""]), 2)
    with pytest.raises(GeneratorError, match="expected Generated"):
        check_result(["a"], 1)


# -- every outcome, end to end ----------------------------------------------------------------------------------


@pytest.mark.contract(
    "Resources",
    "OrderContext",
    "generate",
    "Generated",
    "OutOfStock",
    "Retry",
    "Dead",
    "Other exceptions",
    "Time budget",
    "Wrong results",
    "Plugins directory",
    "Templates",
)
async def test_contract_outcomes_end_to_end(make_stack: Any, plugin_dir: Path) -> None:
    """One order per scripted behaviour through the real daemon: each gets its documented state, none is lost."""
    products = {f"p-{mode}": {"generator": "scripted", "options": {"mode": mode}} for mode in MODES}
    products["p-context"]["template"] = "{text} / {download} / {keys} / {quantity} / {product_id}"
    async with make_stack(
        plugins={"directory": str(plugin_dir)}, products=products, daemon_options={"generator_budget": 0.5}
    ) as stack:
        orders = {}
        for mode in MODES:
            stack.market.add_product(f"p-{mode}")
            orders[mode] = (await stack.market.place_order(f"p-{mode}", 2, email="ann@example.org")).id_order
        await stack.drain()
        jobs = {mode: await stack.job(order_id) for mode, order_id in orders.items()}
        assert all(job is not None for job in jobs.values())  # no outcome loses the order

        # generate (async, from a plugins-directory file), its text, and the plugin's default template
        assert jobs["ok"].state == JobState.DELIVERED.value
        assert stack.market.accepted(orders["ok"]).json["text"] == "default template: OK-0, OK-1 thanks"
        # OrderContext and Resources, rendered through the product's own template with every placeholder
        sent = stack.market.accepted(orders["context"]).json
        text, download, keys, quantity, product = sent["text"].split(" / ")
        assert text.split("|") == [
            "ann@example.org",
            f"shop:{orders['context']}",
            "softstore",
            "context",
            "shop",
            "p-context",
        ]
        assert (download, keys, quantity, product) == ("https://files.example.com/f.zip", "C, C", "2", "p-context")
        assert sent["download"] == "https://files.example.com/f.zip"

        # OutOfStock waits (not dead) and a refill wakes it
        assert jobs["out_of_stock"].state == JobState.WAITING.value and jobs["out_of_stock"].content is None
        assert await stack.daemon.queue.wake_waiting("shop", "p-out_of_stock") == [jobs["out_of_stock"].id]
        assert (await stack.job(orders["out_of_stock"])).state == JobState.QUEUED.value
        # Retry(after=42)
        assert jobs["retry"].state == JobState.RETRY_WAIT.value and jobs["retry"].last_error == "key server busy"
        assert jobs["retry"].due_at == pytest.approx(stack.clock.now() + 42)
        # Dead keeps the job with its reason
        assert jobs["dead"].state == JobState.DEAD.value
        assert jobs["dead"].last_error == "refused by the seller's system"
        # any other exception, a hang past the budget, a wrong result: retried, reason recorded
        assert jobs["boom"].state == JobState.RETRY_WAIT.value
        assert jobs["boom"].last_error == "RuntimeError: plugin bug"
        assert jobs["hang"].state == JobState.RETRY_WAIT.value
        assert "took longer than 0.5 s" in jobs["hang"].last_error
        assert jobs["wrong_count"].state == JobState.RETRY_WAIT.value
        assert jobs["wrong_count"].last_error == "GeneratorError: generator returned 3 keys for quantity 2"
        assert jobs["http_download"].state == JobState.RETRY_WAIT.value
        assert "not HTTPS" in jobs["http_download"].last_error
        for mode in ("out_of_stock", "retry", "dead", "boom", "hang", "wrong_count", "http_download"):
            assert stack.market.deliveries(orders[mode]) == []


@pytest.mark.contract("Time budget")
async def test_contract_time_budget_sync_generator() -> None:
    """A hanging sync generator is abandoned after the budget; the call raises Retry."""
    release = threading.Event()

    class Stuck:
        def generate(self, order: OrderContext) -> Generated:
            release.wait(30)
            return Generated(keys=["late"])

    try:
        with pytest.raises(Retry, match=r"took longer than 0\.3 s"):
            await call_generator(Stuck(), fake_order(), budget=0.3, name="stuck")
    finally:
        release.set()


# -- start-up ---------------------------------------------------------------------------------------------------


@pytest.mark.contract("Option errors")
def test_contract_option_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check-config reports a bad plugin option as one line with its key path and exits 2."""
    config = _config(tmp_path, {"generator": "pattern", "options": {"pattern": "XXX"}})
    assert main(["check-config", "--config", config]) == 2
    assert _one_line_error(capsys) == (
        "delivery-daemon: error: stores[0].products.p1.options.pattern: "
        "needs at least 8 'X' placeholders to be unguessable; expected a pattern with "
        "at least 8 X placeholders (each becomes a random character), "
        "e.g. XXXXX-XXXXX-XXXXX-XXXXX-XXXXX"
    )


@pytest.mark.contract("Broken or missing plugins")
@pytest.mark.parametrize(
    ("source", "generator", "expected"),
    [
        (
            "raise ImportError('no module named keylib')",
            "broken",
            r"plugin file .*broken\.py failed to load: ImportError: no module named keylib",
        ),
        (
            "class B:\n    name = 'b'\n    Options = dict\n    def generate(self, o): pass\nGENERATORS = [B]",
            "b",
            r"generator plugin 'b' \(file .*\): Options must be a pydantic BaseModel subclass",
        ),
        ("x = 1", "broken", r"must define GENERATORS"),
    ],
)
def test_contract_broken_or_missing_plugins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, generator: str, expected: str
) -> None:
    """A plugin that fails to import or breaks the contract stops check-config and serve with one line naming the
    product that uses it (a file that cannot be read is known by its file name); unused, it stops nothing
    (tests/generators/test_plugin_lazy.py)."""
    directory = tmp_path / "plugins"
    directory.mkdir()
    (directory / "broken.py").write_text(source)
    config = _config(tmp_path, {"generator": generator}, {"directory": str(directory)})
    for command in (["check-config", "--config", config], ["serve", "--config", config]):
        assert main(command) == 2
        line = _one_line_error(capsys)
        assert line.startswith("delivery-daemon: error: stores[0].products.p1.generator: "), line
        assert re.search(expected, line)
    assert (
        main(["check-config", "--config", _config(tmp_path, {"generator": "pattern"}, {"directory": str(directory)})])
        == 0
    )
    assert re.search(rf"\n  warning: unused plugin '{generator}' is broken: .*{expected}", capsys.readouterr().out)
    assert main(["plugins", "list", "--plugins-dir", str(directory)]) == 1
    listed = capsys.readouterr().out
    assert re.search(rf"(?m)^{generator}  \S+  \(file .*broken\.py\)  BROKEN\n    .*{expected}", listed), listed
    assert "pattern  0.1.0  (entry point" in listed  # the others are still listed


@pytest.mark.contract("Broken or missing plugins")
def test_contract_broken_or_missing_plugins_unknown_and_failing_init(
    tmp_path: Path, plugin_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown generator name, or a plugin whose __init__ fails, is one config line naming the product."""
    assert main(["check-config", "--config", _config(tmp_path, {"generator": "nope"})]) == 2
    assert "stores[0].products.p1.generator: unknown generator 'nope'" in _one_line_error(capsys)
    (plugin_dir / "scripted.py").write_text(
        SCRIPTED.replace("self.mode = options.mode", "raise OSError('licence server key missing')")
    )
    config = _config(tmp_path, {"generator": "scripted"}, {"directory": str(plugin_dir)})
    assert main(["check-config", "--config", config]) == 2
    assert (
        "stores[0].products.p1.generator: scripted failed to start: licence server key missing; expected "
        in _one_line_error(capsys)
    )


# -- discovery and listing ----------------------------------------------------------------------------------------


@pytest.mark.contract("Entry points")
def test_contract_entry_points() -> None:
    """The shipped generators are found through the delivery_daemon.generators entry point group."""
    found = discover()
    for name in ("pattern", "stock", "signed", "download", "command", "http"):
        assert found[name].source.startswith("entry point delivery_daemon_plugins.")
        assert found[name].source.endswith("(delivery-daemon)")


@pytest.mark.contract("Plugins directory")
def test_contract_plugins_directory(plugin_dir: Path) -> None:
    """A *.py file listing GENERATORS in the plugins directory is a plugin, with its file and __version__."""
    info = discover(plugin_dir)["scripted"]
    assert info.source == f"file {plugin_dir / 'scripted.py'}" and info.version == "0.3"
    assert info.plugin.name == "scripted"


@pytest.mark.contract("plugins list")
def test_contract_plugins_list(plugin_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """plugins list shows every plugin's name, version, origin and options with types and defaults."""
    assert main(["plugins", "list", "--plugins-dir", str(plugin_dir)]) == 0
    out = capsys.readouterr().out
    assert f"scripted  0.3  (file {plugin_dir / 'scripted.py'})\n    mode: str = 'ok'\n" in out
    assert "\n    private_key_file: str = required\n" in out
    assert "pattern  0.1.0  (entry point delivery_daemon_plugins.pattern:PatternGenerator (delivery-daemon))" in out


@pytest.mark.contract("Templates")
def test_contract_templates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every placeholder renders; an unknown one is a config error at the template's key path."""
    from delivery_daemon.pipeline.template import FIELDS, render

    content = render(
        "{keys}|{keys_lines}|{order_id}|{product_id}|{quantity}|{download}|{text}",
        keys=("A", "B"),
        order_id="o",
        product_id="p",
        quantity=2,
        download="https://d/x",
        text="t",
    )
    assert content.text == "A, B|A\nB|o|p|2|https://d/x|t"
    assert set(FIELDS) == {"keys", "keys_lines", "order_id", "product_id", "quantity", "download", "text"}
    config = _config(tmp_path, {"generator": "pattern", "template": "{order.__class__}"})
    assert main(["check-config", "--config", config]) == 2
    assert "stores[0].products.p1.template: unknown field {order.__class__}" in _one_line_error(capsys)
