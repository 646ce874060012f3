"""The Debian package family: versions, relations, Packages indexes."""
