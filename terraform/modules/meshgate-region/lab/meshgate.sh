#!/bin/sh
# The lab's stand-in for the meshgate that cloud-init installs in a virtualenv: this checkout,
# run by the lab's Python (unit-run.py names it).
exec "${MESHGATE_LAB_PYTHON:-python3}" -m meshgate "$@"
