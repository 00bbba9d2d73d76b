"""A real, minimal OpenStack on 127.0.0.1 for the provisioning tests.

keystone, glance, placement, nova and neutron (the PyPI releases pinned in
requirements.lock, from their own venv: see venv.py) on Debian's MariaDB and
RabbitMQ, each started by this harness with its own data dir and ports under
``<tmp>/atoll-openstack/run-<pid>``, so the machine's own services (if any) are
never touched. The APIs run under uwsgi; nova's conductor, scheduler and
compute (with the fake virt driver: nothing is booted for real) and the
bring-up steps are console scripts. Nothing listens beyond loopback.

Bring-up, in order, with what runs concurrently grouped:
  1. MariaDB (fresh datadir) | epmd + RabbitMQ node
  2. the databases: loaded from the venv's cached dump (ports rewritten), or on the
     first run migrated, bootstrapped (keystone admin, nova cells) and dumped
  3. keystone API; then service users, services and endpoints through openstacksdk
  4. glance, placement, neutron and nova APIs | nova conductor, scheduler, compute
  5. flavor, image, the external network and a tenant network behind a router
  6. the compute node is mapped into cell1 and has heartbeated since start
Stop ends every process group (procs.Daemons) and removes the run dir.
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime
import logging
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
from typing import Any

import openstack
import openstack.connection
import yaml

from tests.integration.openstack import configs, procs, venv
from tests.integration.openstack.configs import PASSWORD, Ports

log = logging.getLogger("openstack.controlplane")

DATABASES = ("keystone", "glance", "placement", "nova_api", "nova", "nova_cell0", "neutron")
SERVICES = {
    # name: (service type, uwsgi module, URL path)
    "glance": ("image", "glance.wsgi.api", ""),
    "placement": ("placement", "placement.wsgi.api", ""),
    "nova": ("compute", "nova.wsgi.osapi_compute", "/v2.1"),
    "neutron": ("network", "neutron.wsgi.api", ""),
}
ADMIN_CLOUD = "atoll-admin"
MEMBER_CLOUD = "atoll-member"
FLAVOR = "m1.atoll"
HUGE_FLAVOR = "m1.atoll-huge"
IMAGE = "atoll-atomic"
NETWORK = "private"
EXTERNAL_NETWORK = "public"


def base_dir() -> pathlib.Path:
    return pathlib.Path(tempfile.gettempdir()) / "atoll-openstack"


class ControlPlane:
    def __init__(self) -> None:
        self.run_dir = base_dir() / f"run-{os.getpid()}"
        self.daemons: procs.Daemons | None = None
        self.timings: dict[str, float] = {}
        self.venv = pathlib.Path()
        self.ports = Ports(*procs.free_ports(9))
        self.clouds_yaml = self.run_dir / "clouds.yaml"

    # -- public ----------------------------------------------------------------

    def start(self) -> ControlPlane:
        began = time.monotonic()
        procs.sweep_stale(base_dir())
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.run_dir.mkdir(parents=True)
        self.venv, self.timings["install"] = venv.ensure()
        self.daemons = procs.Daemons(self.run_dir)
        try:
            self._bring_up()
        except BaseException:
            self.stop()
            raise
        self.timings["start"] = time.monotonic() - began - self.timings["install"]
        log.info("control plane up in %.1fs (install %.1fs)", self.timings["start"], self.timings["install"])
        return self

    def stop(self) -> None:
        if self.daemons is not None:
            self.daemons.stop()
            self.daemons = None
        if not os.environ.get("ATOLL_TEST_KEEP_OPENSTACK"):
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def connect(self, cloud: str = ADMIN_CLOUD) -> openstack.connection.Connection:
        return openstack.connect(load_yaml_config=False, load_envvars=False, **self._auth(cloud))

    def check_alive(self) -> None:
        assert self.daemons is not None
        self.daemons.check_alive()

    # -- bring-up ----------------------------------------------------------------

    def _bring_up(self) -> None:
        t0 = time.monotonic()
        started_at = datetime.datetime.now(datetime.UTC).replace(tzinfo=None, microsecond=0)
        etc = self._write_configs()
        self._parallel(self._start_mariadb, self._start_rabbitmq)
        self._write_keys()
        self._databases(etc)
        self.timings["schemas"] = time.monotonic() - t0
        # Start every API at once: importing them is most of the bring-up, and
        # they reach keystone only on the first request. nova-compute waits for
        # the catalog and placement: it reports its resources once at start,
        # then only every minute.
        self._start_uwsgi(
            "keystone", "keystone.wsgi.api", {"OS_KEYSTONE_CONFIG_FILES": str(etc / "keystone.conf")}
        )
        env = {
            "glance": {"OS_GLANCE_CONFIG_DIR": str(etc / "glance")},
            "placement": {"OS_PLACEMENT_CONFIG_DIR": str(etc)},
            # nova's WSGI app takes the first file as its paste config.
            "nova": {
                "OS_NOVA_CONFIG_DIR": str(etc),
                "OS_NOVA_CONFIG_FILES": f"{self.venv / 'etc' / 'nova' / 'api-paste.ini'};nova.conf",
            },
            "neutron": {
                "OS_NEUTRON_CONFIG_DIR": str(etc / "neutron"),
                "OS_NEUTRON_CONFIG_FILES": "neutron.conf;ml2_conf.ini",
            },
        }
        for name, (_, module, _) in SERVICES.items():
            self._start_uwsgi(name, module, env[name])
        self._wait_http(self.ports.keystone, "keystone")
        self._write_clouds_yaml()
        self._register_services()
        # The nova services log in as nova at start: after its user exists.
        nova_conf = ["--config-file", str(etc / "nova.conf")]
        for binary in ("nova-conductor", "nova-scheduler", "nova-compute"):
            self._daemon(binary, [str(self.venv / "bin" / binary), *nova_conf])
        for name in SERVICES:
            self._wait_http(getattr(self.ports, name), name)
        self.timings["apis"] = time.monotonic() - t0
        self._create_resources()
        self._wait_compute(started_at)
        self.timings["compute"] = time.monotonic() - t0

    def _databases(self, etc: pathlib.Path) -> None:
        """Every service's database: migrated and bootstrapped once per venv, then loaded from a dump.

        Migrations, keystone's bootstrap and nova's cell mappings are most of
        a fresh bring-up (a minute here), and their result depends only on
        the pinned releases, so it is cached beside the venv as a mariadb-dump.
        The only rows that name this run's ports (keystone's own endpoints,
        nova's cell mappings) are rewritten after loading it.
        """
        client = [*self._sql_client()]
        grant = f"CREATE USER 'openstack'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';"
        grant += "GRANT ALL PRIVILEGES ON *.* TO 'openstack'@'127.0.0.1';"
        subprocess.run([*client, "-e", grant], check=True)
        dump = self.venv / "databases.sql"
        if dump.exists():
            with open(dump, "rb") as sql:
                subprocess.run(client, stdin=sql, check=True)
            self._rebind()
            return
        subprocess.run([*client, "-e", "".join(f"CREATE DATABASE {name};" for name in DATABASES)], check=True)
        self._parallel(
            lambda: self._keystone_schema(etc),
            lambda: self._manage(
                "glance-manage", "--config-file", etc / "glance" / "glance-api.conf", "db_sync"
            ),
            lambda: self._manage("placement-manage", "--config-file", etc / "placement.conf", "db", "sync"),
            lambda: self._manage(
                "neutron-db-manage",
                *("--config-file", etc / "neutron" / "neutron.conf"),
                *("--config-file", etc / "neutron" / "ml2_conf.ini"),
                *("upgrade", "heads"),
            ),
            lambda: self._nova_schema(etc),
        )
        partial = dump.with_suffix(".partial")
        with open(partial, "wb") as out:
            subprocess.run(
                ["mariadb-dump", *self._sql_client()[1:], "--databases", *DATABASES], stdout=out, check=True
            )
        partial.rename(dump)

    def _sql_client(self) -> list[str]:
        return ["mariadb", "--no-defaults", "-uroot", f"--socket={self.run_dir / 'mysql' / 'mysqld.sock'}"]

    def _rebind(self) -> None:
        """Point the cached rows that hold addresses at this run's ports."""
        cell0 = "00000000-0000-0000-0000-000000000000"
        sql = (
            f"UPDATE keystone.endpoint SET url = '{configs.keystone_url(self.ports)}';"
            f"UPDATE nova_api.cell_mappings SET database_connection = "
            f"'{configs.db(self.ports, 'nova_cell0')}' WHERE uuid = '{cell0}';"
            f"UPDATE nova_api.cell_mappings SET database_connection = '{configs.db(self.ports, 'nova')}', "
            f"transport_url = '{configs.transport(self.ports)}' WHERE uuid <> '{cell0}';"
        )
        subprocess.run([*self._sql_client(), "-e", sql], check=True)

    def _write_keys(self) -> None:
        """Fernet token and credential keys, as `keystone-manage fernet_setup` writes them, without
        starting keystone-manage twice: keys 0 (staged) and 1 (primary) of 32 random bytes each."""
        for repo in ("fernet-keys", "credential-keys"):
            path = self.run_dir / "keystone" / repo
            path.mkdir(parents=True, mode=0o700)
            for index in ("0", "1"):
                key = path / index
                key.write_bytes(base64.urlsafe_b64encode(os.urandom(32)))
                key.chmod(0o600)

    def _parallel(self, *steps: Any) -> None:
        with concurrent.futures.ThreadPoolExecutor(len(steps)) as pool:
            for future in [pool.submit(step) for step in steps]:
                future.result()

    def _write_configs(self) -> pathlib.Path:
        etc = self.run_dir / "etc"
        for sub in ("glance", "neutron"):
            (etc / sub).mkdir(parents=True, exist_ok=True)
        for sub in (
            "keystone",
            "glance/images",
            "glance/locks",
            "nova/instances",
            "nova/locks",
            "neutron/locks",
        ):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        run, ports, v = self.run_dir, self.ports, self.venv
        (etc / "keystone.conf").write_text(configs.keystone(run, ports))
        (etc / "glance" / "glance-api.conf").write_text(configs.glance(run, ports, v))
        (etc / "placement.conf").write_text(configs.placement(run, ports))
        (etc / "nova.conf").write_text(configs.nova(run, ports, v))
        (etc / "neutron" / "neutron.conf").write_text(configs.neutron(run, ports, v))
        (etc / "neutron" / "ml2_conf.ini").write_text(configs.ml2())
        return etc

    def _daemon(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        assert self.daemons is not None
        self.daemons.start(name, argv, env)

    def _manage(self, tool: str, *args: object) -> None:
        assert self.daemons is not None
        argv = [str(self.venv / "bin" / tool), *map(str, args)]
        procs.run(argv, self.daemons.logs / f"{tool}.log")

    def _start_mariadb(self) -> None:
        data = self.run_dir / "mysql"
        data.mkdir()
        assert self.daemons is not None
        procs.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={data}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            self.daemons.logs / "mariadb-install-db.log",
        )
        self._daemon(
            "mariadb",
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={data}",
                f"--port={self.ports.mysql}",
                "--bind-address=127.0.0.1",
                f"--socket={data / 'mysqld.sock'}",
                f"--pid-file={data / 'mysqld.pid'}",
                "--user=root",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=128M",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-doublewrite=0",
                "--max-connections=1000",
            ],
        )
        procs.wait_until(lambda: self._alive_or_raise() and procs.port_open(self.ports.mysql), 60, "MariaDB")

    def _start_rabbitmq(self) -> None:
        home = self.run_dir / "rabbitmq"
        home.mkdir()
        (home / "rabbitmq.conf").write_text(configs.rabbitmq(self.ports))
        (home / "enabled_plugins").write_text("[].\n")
        (home / "env.conf").write_text("")
        env = {
            "HOME": str(home),  # the Erlang cookie goes here
            "ERL_EPMD_PORT": str(self.ports.epmd),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODENAME": f"atoll{self.ports.amqp}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.ports.amqp),
            "RABBITMQ_DIST_PORT": str(self.ports.erlang_dist),
            "RABBITMQ_CONF_ENV_FILE": str(home / "env.conf"),
            "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(home / "log"),
            "RABBITMQ_PID_FILE": str(home / "rabbitmq.pid"),
            "RABBITMQ_LOGS": "-",
        }
        # epmd in the foreground in its own group; the node would otherwise
        # start a daemonized one that outlives the harness.
        self._daemon("epmd", ["epmd", "-port", str(self.ports.epmd), "-address", "127.0.0.1"], env)
        procs.wait_until(lambda: procs.port_open(self.ports.epmd), 10, "epmd")
        self._daemon("rabbitmq", ["/usr/lib/rabbitmq/bin/rabbitmq-server"], env)
        procs.wait_until(lambda: self._alive_or_raise() and procs.port_open(self.ports.amqp), 90, "RabbitMQ")

    def _alive_or_raise(self) -> bool:
        self.check_alive()
        return True

    def _keystone_schema(self, etc: pathlib.Path) -> None:
        conf = ["--config-file", etc / "keystone.conf"]
        self._manage("keystone-manage", *conf, "db_sync")
        url = configs.keystone_url(self.ports)
        self._manage(
            "keystone-manage",
            *conf,
            "bootstrap",
            *("--bootstrap-password", PASSWORD),
            *("--bootstrap-admin-url", url, "--bootstrap-public-url", url, "--bootstrap-internal-url", url),
            *("--bootstrap-region-id", "RegionOne"),
        )

    def _nova_schema(self, etc: pathlib.Path) -> None:
        conf = ["--config-file", etc / "nova.conf"]
        self._manage("nova-manage", *conf, "api_db", "sync")
        # `db sync` migrates the databases of cell0 and of [database] (cell1's).
        cell0 = configs.db(self.ports, "nova_cell0")
        self._manage("nova-manage", *conf, "cell_v2", "map_cell0", "--database_connection", cell0)
        self._manage("nova-manage", *conf, "cell_v2", "create_cell", "--name", "cell1")
        self._manage("nova-manage", *conf, "db", "sync")
        self._manage("nova-manage", *conf, "db", "online_data_migrations")

    def _start_uwsgi(self, name: str, module: str, env: dict[str, str]) -> None:
        port = getattr(self.ports, name)
        argv = [
            str(self.venv / "bin" / "uwsgi"),
            *("--http-socket", f"127.0.0.1:{port}", "--module", module),
            *("--master", "--processes", "1", "--threads", "4", "--enable-threads", "--lazy-apps"),
            *("--die-on-term", "--need-app", "--buffer-size", "65535", "--disable-logging"),
            *("--http-auto-chunked", "--http-raw-body", "--chunked-input-limit", "10485760"),
            # --http-socket does not keep connections alive; say so, or clients
            # reuse a closed connection and get "connection reset".
            *("--add-header", "Connection: close"),
        ]
        self._daemon(name, argv, env)

    def _wait_http(self, port: int, name: str) -> None:
        import urllib.error
        import urllib.request

        def answers() -> bool:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                    return True
            except urllib.error.HTTPError:
                return True  # any HTTP answer means the app is loaded
            except OSError:
                return False

        procs.wait_until(answers, 120, f"{name} API on port {port}", interval=0.2)

    # -- identity and resources --------------------------------------------------

    def _auth(self, cloud: str) -> dict[str, Any]:
        user, project = ("admin", "admin") if cloud == ADMIN_CLOUD else ("member", "member")
        return {
            "auth_type": "password",
            "auth": {
                "auth_url": configs.keystone_url(self.ports),
                "username": user,
                "password": PASSWORD,
                "project_name": project,
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            "region_name": "RegionOne",
            "identity_api_version": "3",
        }

    def _write_clouds_yaml(self) -> None:
        clouds = {name: self._auth(name) for name in (ADMIN_CLOUD, MEMBER_CLOUD)}
        self.clouds_yaml.write_text(yaml.safe_dump({"clouds": clouds}, sort_keys=False))

    def _register_services(self) -> None:
        conn = self.connect()
        ident = conn.identity
        admin_role = ident.find_role("admin")
        member_role = ident.find_role("member")
        service_role = ident.find_role("service")
        service = ident.create_project(name="service", domain_id="default")
        member_project = ident.create_project(name="member", domain_id="default")
        member = ident.create_user(name="member", password=PASSWORD, default_project_id=member_project.id)
        ident.assign_project_role_to_user(member_project, member, member_role)
        for name, (kind, _, path) in SERVICES.items():
            user = ident.create_user(name=name, password=PASSWORD, default_project_id=service.id)
            ident.assign_project_role_to_user(service, user, admin_role)
            ident.assign_project_role_to_user(service, user, service_role)
            svc = ident.create_service(name=name, type=kind)
            url = f"http://127.0.0.1:{getattr(self.ports, name)}{path}"
            ident.create_endpoint(service_id=svc.id, interface="public", url=url, region_id="RegionOne")

    def _create_resources(self) -> None:
        admin = self.connect()
        admin.compute.create_flavor(name=FLAVOR, ram=512, vcpus=1, disk=1)
        # More disk than the fake hypervisor claims (600 TB; Nova has no disk quota): "No valid host".
        admin.compute.create_flavor(name=HUGE_FLAVOR, ram=512, vcpus=1, disk=1_000_000)
        image_file = self.run_dir / "atomic.img"
        image_file.write_bytes(b"\0" * 4096)
        admin.image.create_image(
            name=IMAGE,
            filename=str(image_file),
            disk_format="raw",
            container_format="bare",
            visibility="public",
            wait=True,
        )
        public = admin.network.create_network(
            name=EXTERNAL_NETWORK,
            is_router_external=True,
            provider_network_type="flat",
            provider_physical_network="public",
        )
        # Documentation range (RFC 5737): addresses only in Neutron's database.
        admin.network.create_subnet(
            network_id=public.id,
            ip_version=4,
            cidr="203.0.113.0/24",
            gateway_ip="203.0.113.1",
            is_dhcp_enabled=False,
            allocation_pools=[{"start": "203.0.113.10", "end": "203.0.113.250"}],
        )
        member = self.connect(MEMBER_CLOUD)
        private = member.network.create_network(name=NETWORK)
        subnet = member.network.create_subnet(
            network_id=private.id, ip_version=4, cidr="10.20.0.0/24", is_dhcp_enabled=False
        )
        router = member.network.create_router(name="router", external_gateway_info={"network_id": public.id})
        member.network.add_interface_to_router(router, subnet_id=subnet.id)

    def _wait_compute(self, started_at: datetime.datetime) -> None:
        """See the compute node mapped into cell1 and heartbeating since bring-up began.

        A compute node is listed by the hypervisors API once the scheduler's
        periodic discovery (configs.nova) has mapped its host into a cell; a
        heartbeat older than this bring-up (a stale "up") would send the first
        boot to ERROR.
        """
        admin = self.connect()
        procs.wait_until(
            lambda: self._alive_or_raise() and list(admin.compute.hypervisors()),
            120,
            "the compute node mapped into cell1",
            interval=0.5,
        )

        def fresh_heartbeat() -> bool:
            self.check_alive()
            for svc in admin.compute.services(binary="nova-compute"):
                if not svc.updated_at:  # registered, not yet reported
                    continue
                updated = datetime.datetime.fromisoformat(str(svc.updated_at).rstrip("Z").split(".")[0])
                if svc.state == "up" and updated >= started_at:
                    return True
            return False

        procs.wait_until(fresh_heartbeat, 120, "a nova-compute heartbeat", interval=0.5)
