"""Which adapter serves which channel name: webhooks from config/channels.yaml, else `log`."""

from __future__ import annotations

from channels.base import Channel
from channels.config import ChannelConfig
from channels.log_channel import LogChannel
from channels.webhook import WebhookChannel


class Channels:
    def __init__(self, configs: dict[str, ChannelConfig]) -> None:
        self._configs = configs
        self._adapters: dict[str, Channel] = {}

    def get(self, name: str) -> Channel:
        adapter = self._adapters.get(name)
        if adapter is None:
            config = self._configs.get(name)
            adapter = (
                WebhookChannel(name, config)
                if config and config.type == "webhook"
                else LogChannel(name)
            )
            self._adapters[name] = adapter
        return adapter
