"""Test-suite setup: the suite (unit tests and notebooks) runs in quick mode unless told otherwise."""
import os

os.environ.setdefault("INSTDISC_QUICK", "1")
