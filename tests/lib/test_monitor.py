"""env.json's package list: every installed distribution, read from the metadata's header lines only."""

from __future__ import annotations

import importlib.metadata

from lib.monitor import _metadata_header, installed_packages


def test_the_header_ends_at_the_first_blank_line():
    text = "Metadata-Version: 2.1\nName: foo-bar\nVersion: 1.2.post3\nSummary: x: y\n\nName: not-me\nVersion: 9\n"
    assert _metadata_header(text) == {"Name": "foo-bar", "Version": "1.2.post3"}
    assert _metadata_header("Name: only\r\nVersion: 2\r\n\r\nbody") == {"Name": "only", "Version": "2"}


def test_every_installed_distribution_is_listed_with_its_version():
    packages = installed_packages()
    expected = {}
    for dist in importlib.metadata.distributions():
        expected.setdefault(dist.name, dist.version)  # parses each whole file: the slow, sure way
    assert packages == expected
    assert packages["torch"] == importlib.metadata.version("torch")
    assert list(packages) == sorted(packages, key=str.lower)
