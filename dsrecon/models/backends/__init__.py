"""Built-in latent-dynamics backends; importing this package registers them."""

import importlib

for _mod in ("plrnn", "alrnn", "dendplrnn", "s4d", "lru", "mamba", "chimera", "linear"):
    importlib.import_module(f"{__name__}.{_mod}")
