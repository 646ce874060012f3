"""ezt builder: recipes to verified, dated template cache images."""

__version__ = "0.1.0"
