"""Bringing hosts into the cluster: OpenStack servers (`provision`) and bare metal (`enroll`).

Each host gets a join token and the coordinator's CA pin through cloud-init
user-data (`cloudinit`), and is recorded as a Machine object so the cluster
knows which provider owns it and which token to revoke when it goes.
"""
