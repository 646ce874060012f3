"""ezt runtime: pull cache images and deploy containers from them on a node."""
