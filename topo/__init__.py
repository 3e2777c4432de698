"""Topologies for NetServ on Mininet's API: pure-data Topo classes and the
switch class and context manager that make them real."""
