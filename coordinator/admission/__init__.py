"""Admission policies the cluster API applies to writes, beside validation: pure functions of the object."""
