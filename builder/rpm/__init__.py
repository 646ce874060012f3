"""The RPM family: rpm-md repositories, rpm's version order and dependencies, libsolv resolution."""
