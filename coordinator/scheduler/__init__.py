"""Placing pods on nodes: filters say where a pod may go, scores say where it should."""
