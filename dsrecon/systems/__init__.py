"""Benchmark dynamical systems (Lorenz63, Rössler, Lorenz96, ...) and their simulation.

>>> from dsrecon.systems import get_system, integrate
>>> sys = get_system("lorenz63")
>>> integrate(sys, 100, 0.01, transient=1.0).shape
(100, 3)
"""

from dsrecon.systems.flows import System
from dsrecon.systems.registry import get_system, list_systems, system_specs
from dsrecon.systems.simulation import integrate, simulate_system

__all__ = ["System", "get_system", "list_systems", "system_specs", "integrate", "simulate_system"]
