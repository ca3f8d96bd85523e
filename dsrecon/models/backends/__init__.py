"""Built-in latent-dynamics backends; importing this package registers them."""

import importlib

for _mod in ("plrnn", "alrnn", "dendplrnn", "s4d", "lru", "mamba", "chimera", "linear"):
    try:
        importlib.import_module(f"{__name__}.{_mod}")
    except ModuleNotFoundError as _e:  # a backend file not written yet
        if _e.name != f"{__name__}.{_mod}":
            raise
