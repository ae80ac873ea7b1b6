"""Settings: ``duet.toml`` plus ``DUET_*`` environment variables, in one place."""

from llmduet.config.settings import ModelSpec, Settings, TokenPrice, load_settings

__all__ = ["ModelSpec", "Settings", "TokenPrice", "load_settings"]
