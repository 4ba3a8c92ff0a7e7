"""serial: keys made of a product code and a random number."""

import secrets

from pydantic import BaseModel, ConfigDict, Field

from delivery_daemon.generators.contract import Generated, OrderContext


class SerialOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(pattern=r"^[A-Z]{2,8}$")
    digits: int = Field(default=12, ge=8, le=32)


class SerialGenerator:
    name = "serial"
    Options = SerialOptions

    def __init__(self, options: SerialOptions) -> None:
        self.options = options

    def generate(self, order: OrderContext) -> Generated:
        width = self.options.digits
        return Generated(
            keys=[f"{self.options.code}-{secrets.randbelow(10**width):0{width}d}" for _ in range(order.quantity)]
        )
