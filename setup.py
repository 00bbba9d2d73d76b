"""Generate atoll.v1 from protos/ before packaging (pyproject holds the metadata)."""

import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithProtos(build_py):
    def run(self) -> None:
        subprocess.check_call([sys.executable, "protos/generate.py"])
        # The generated modules did not exist when packages were discovered.
        self.packages = sorted(set(self.packages or []) | {"atoll.v1"})
        super().run()


setup(cmdclass={"build_py": BuildWithProtos})
