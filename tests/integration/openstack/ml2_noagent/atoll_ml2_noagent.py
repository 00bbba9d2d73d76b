"""Bind every Neutron port at once, as if an Open vSwitch agent had wired it.

The test control plane runs no L2 agent (nothing real is plugged: Nova's
compute driver is fake), so without this ML2 would leave ports unbound and
Nova would put servers in ERROR. Installed only into the test harness's
OpenStack venv, never into Atoll's.
"""

from neutron_lib import constants
from neutron_lib.plugins.ml2 import api


class NoAgentMechanismDriver(api.MechanismDriver):
    def initialize(self) -> None:
        pass

    def bind_port(self, context: api.PortContext) -> None:
        for segment in context.segments_to_bind:
            context.set_binding(
                segment[api.ID],
                "ovs",
                {"port_filter": True, "ovs_hybrid_plug": False},
                status=constants.PORT_STATUS_ACTIVE,
            )
            return
