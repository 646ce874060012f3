"""Build small, real .deb files with dpkg-deb for hermetic tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def build_deb(
    out_dir: Path,
    name: str,
    version: str = "1.0",
    arch: str = "all",
    fields: dict[str, str] | None = None,
    files: dict[str, bytes | str] | None = None,
    scripts: dict[str, str] | None = None,
    symlinks: dict[str, str] | None = None,
) -> Path:
    """Write ``<name>_<version>_<arch>.deb`` into ``out_dir`` and return its path.

    ``fields`` are extra control fields (``Depends``, ``Essential``, ``Priority``...),
    ``files`` map absolute paths in the package to content, ``scripts`` map
    maintainer script names (``postinst``...) to their text, ``symlinks`` map
    link paths to targets.
    """
    tree = out_dir / f".build-{name}-{version}"
    subprocess.run(["rm", "-rf", str(tree)], check=True)
    debian = tree / "DEBIAN"
    debian.mkdir(parents=True)
    control = {
        "Package": name,
        "Version": version,
        "Architecture": arch,
        "Maintainer": "ezt tests <tests@invalid>",
        "Description": f"test package {name}",
    }
    control.update(fields or {})
    (debian / "control").write_text("".join(f"{k}: {v}\n" for k, v in control.items()))
    for script, text in (scripts or {}).items():
        path = debian / script
        path.write_text(text)
        path.chmod(0o755)
    for file_path, content in (files or {}).items():
        target = tree / file_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        target.write_bytes(data)
        if file_path.startswith(("/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/")):
            target.chmod(0o755)
    for link, dest in (symlinks or {}).items():
        target = tree / link.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(dest)
    out = out_dir / f"{name}_{version.replace(':', '%3a')}_{arch}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(out)],
        check=True,
        capture_output=True,
    )
    subprocess.run(["rm", "-rf", str(tree)], check=True)
    return out
