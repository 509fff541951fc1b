"""The version comes from KIRBY_EXAMPLE_VERSION at build time, so one tree builds 1.0.0 and 1.1.0."""

import os

from setuptools import setup

setup(version=os.environ.get("KIRBY_EXAMPLE_VERSION", "1.0.0"))
