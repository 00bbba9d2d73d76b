"""Where a node gets its images: search registries, blocking, insecure registries, mirrors, credentials.

The RHEL/Atomic habit (ADD_REGISTRY and friends) for Atoll: the coordinator
pushes one RegistriesSpec to every node, a node may add its own (a YAML file,
legacy /etc/sysconfig/docker keys), and the agent

* resolves each image name a pod names into the fully qualified names to try,
  in order, with the credentials for each (resolve.ImageResolver, used by
  agent.pods.images.ensure_image);
* writes the Engine's share (insecure registries, Docker Hub mirrors) to
  dockerd's daemon.json and reloads it (engine.DaemonJsonConfigurator).

RegistryManager ties both to the settings' sources; see manager.py for how
the daemon drives it and settings.py for the merge order. The node-local file
(agent option `registries_file`, default /etc/atoll/registries.yaml) has
RegistriesSpec's fields; keep it mode 0600 when it holds passwords:

    search: [kubernetes.lab.com:5000, registry.access.redhat.com]
    insecure: [kubernetes.lab.com:5000]        # host[:port] or a CIDR
    blocked: [docker.io]                       # '*' or 'all': everything not in search
    mirrors: ['https://mirror.lab.com']        # Docker Hub mirrors, http(s) URLs
    auths:
      - {registry: kubernetes.lab.com:5000, username: deploy, password: s3cret}

Image pull failures, blocked registries included, show on the pod as waiting
reason ErrImagePull (then ImagePullBackOff) with a message such as
`failed to pull image "quay.io/x": registry quay.io is blocked by the node's
registry settings`, or the last registry's own error and the registries tried.
"""

from agent.registries.engine import (
    DaemonJsonConfigurator,
    EngineConfigError,
    EngineConfigurator,
    EngineSettings,
    RecordingEngineConfigurator,
)
from agent.registries.manager import RegistryManager
from agent.registries.resolve import (
    DEFAULT_RESOLVER,
    AuthConfig,
    ImageBlockedError,
    ImageResolver,
    Resolution,
    registry_of,
    split_registry,
)
from agent.registries.settings import Credential, RegistrySettings, SettingsError

__all__ = [
    "DEFAULT_RESOLVER",
    "AuthConfig",
    "Credential",
    "DaemonJsonConfigurator",
    "EngineConfigError",
    "EngineConfigurator",
    "EngineSettings",
    "ImageBlockedError",
    "ImageResolver",
    "RecordingEngineConfigurator",
    "RegistryManager",
    "RegistrySettings",
    "Resolution",
    "SettingsError",
    "registry_of",
    "split_registry",
]
