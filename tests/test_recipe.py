"""Recipe directories: templates, sets, apps, url map expansion and file:line errors."""

import json
from pathlib import Path

import pytest

from builder.appcaches import default_app_caches
from builder.errors import EztError
from builder.recipe import load_buildable, load_template, os_template_names, read_recipe_dir, split_template_name
from tests.cli import assert_user_error, run_ezt

URLMAP = {"DEBIAN_SERVER": "http://mirror.invalid/debian", "SEC": "http://sec.invalid/debian-security"}


def make_recipe(root: Path, name: str = "debian-12-x86_64", **files: str) -> Path:
    recipe = root / name
    recipe.mkdir(parents=True)
    defaults = {
        "os_package_manager": "dpkg\n",
        "os_distribution": "debian\n",
        "os_repositories": "# comment\n$DEBIAN_SERVER bookworm main\n${SEC} bookworm-security main\n",
        "os_packages": "@required\napt\n# a comment\nbash=5.2.15-2+b2  # pinned\n",
    }
    defaults.update({k.replace("__", "-"): v for k, v in files.items()})
    for file_name, text in defaults.items():
        if text is not None:
            (recipe / file_name).write_text(text)
    return recipe


def test_base_template(tmp_path: Path) -> None:
    recipe = make_recipe(tmp_path, os_environment="LANG=C.UTF-8\nexport FOO='bar'\n", os_post__cache="#!/bin/sh\n")
    template = load_template("debian-12-x86_64", tmp_path, URLMAP)
    assert template.family.name == "deb"
    assert template.native_arch == "amd64"
    assert [(r.url, r.suite, r.components) for r in template.repositories] == [
        ("http://mirror.invalid/debian", "bookworm", ("main",)),
        ("http://sec.invalid/debian-security", "bookworm-security", ("main",)),
    ]
    assert [(p.name, p.version) for p in template.packages] == [
        ("@required", None),
        ("apt", None),
        ("bash", "5.2.15-2+b2"),
    ]
    assert template.packages[2].where is not None and template.packages[2].where.line == 4
    assert template.environment == (("LANG", "C.UTF-8"), ("FOO", "bar"))
    assert template.post_cache is not None and template.post_cache.path == recipe / "os_post-cache"
    assert template.set_name is None


def test_set_inherits_what_it_lacks(tmp_path: Path) -> None:
    make_recipe(
        tmp_path,
        minimal_packages="@required\n",
        minimal_description="small\n",
        os_description="big\n",
        nginx_packages="nginx\n",
    )
    template = load_template("debian-12-x86_64-minimal", tmp_path, URLMAP)
    assert [p.name for p in template.packages] == ["@required"]
    assert template.description == "small"
    assert len(template.repositories) == 2
    recipe = read_recipe_dir(tmp_path / "debian-12-x86_64")
    assert recipe.sets() == ["minimal"]
    assert recipe.apps() == ["nginx"]
    assert os_template_names(tmp_path) == ["debian-12-x86_64", "debian-12-x86_64-minimal"]


def test_digest_follows_content(tmp_path: Path) -> None:
    recipe = make_recipe(tmp_path)
    first = load_template("debian-12-x86_64", tmp_path, URLMAP).digest()
    assert load_template("debian-12-x86_64", tmp_path, URLMAP).digest() == first
    (recipe / "os_packages").write_text("apt\n")
    assert load_template("debian-12-x86_64", tmp_path, URLMAP).digest() != first


def test_template_name_split(tmp_path: Path) -> None:
    make_recipe(tmp_path)
    make_recipe(tmp_path, name="debian-12-x86_64-extra")
    assert split_template_name("debian-12-x86_64", tmp_path) == ("debian-12-x86_64", None, ())
    assert split_template_name("debian-12-x86_64-extra", tmp_path) == ("debian-12-x86_64-extra", None, ())
    assert split_template_name("debian-12-x86_64-minimal+nginx", tmp_path) == (
        "debian-12-x86_64",
        "minimal",
        ("nginx",),
    )


@pytest.mark.parametrize(
    ("files", "where_suffix", "message"),
    [
        ({"os_packages": None}, "os_packages", "missing os_packages"),
        ({"os_package_manager": "pacman\n"}, "os_package_manager:1", "unknown package manager 'pacman'"),
        ({"os_repositories": "$NOPE bookworm main\n"}, "os_repositories:1", "unknown url map variable $NOPE"),
        ({"os_repositories": "$DEBIAN_SERVER\n"}, "os_repositories:1", "malformed repository line"),
        ({"os_repositories": "ftp://x.invalid bookworm main\n"}, "os_repositories:1", "bad repository URL"),
        ({"os_repositories": "[trusted=maybe] http://x.invalid b main\n"}, "os_repositories:1", "trusted="),
        ({"os_repositories": "[foo=bar] http://x.invalid b main\n"}, "os_repositories:1", "bad repository option"),
        ({"os_repositories": "http://x.invalid bookworm\n"}, "os_repositories:1", "no component"),
        ({"os_packages": "apt\nBad_Name\n"}, "os_packages:2", "bad package name 'Bad_Name'"),
        ({"os_packages": "apt\nbash=\n"}, "os_packages:2", "bad version pin"),
        ({"os_packages": "apt\nbash=not a version!\n"}, "os_packages:2", "bad version pin"),
        ({"os_packages": "@everything\n"}, "os_packages:1", "unknown priority class"),
        ({"os_packages": "# only a comment\n"}, "os_packages", "no packages listed"),
        ({"os_environment": "FOO=1\nnot an assignment\n"}, "os_environment:2", "expected KEY=VALUE"),
        ({"os_frobnicate": "x\n"}, "os_frobnicate", "unknown recipe file kind"),
        ({"os_package_manager": "dpkg\nrpm\n"}, "os_package_manager:1", "one word"),
    ],
)
def test_recipe_errors(tmp_path: Path, files: dict[str, str | None], where_suffix: str, message: str) -> None:
    make_recipe(tmp_path, **files)
    with pytest.raises(EztError) as caught:
        load_template("debian-12-x86_64", tmp_path, URLMAP)
    assert str(caught.value.where).endswith("debian-12-x86_64/" + where_suffix)
    assert message in caught.value.message


def test_unknown_template_and_set(tmp_path: Path) -> None:
    make_recipe(tmp_path)
    with pytest.raises(EztError, match=r"unknown template 'ubuntu-22\.04-x86_64'"):
        load_template("ubuntu-22.04-x86_64", tmp_path, URLMAP)
    with pytest.raises(EztError, match="no tiny_packages"):
        load_template("debian-12-x86_64-tiny", tmp_path, URLMAP)


def test_bad_recipe_dir_name(tmp_path: Path) -> None:
    make_recipe(tmp_path, name="debian")
    with pytest.raises(EztError, match="must be named <os>-<version>-<arch>"):
        load_template("debian", tmp_path, URLMAP)


def test_shipped_recipes_load() -> None:
    recipes = Path(__file__).parent.parent / "recipes"
    for name in os_template_names(recipes):
        rpm_servers = {v: f"http://{v.lower()}.invalid" for v in ("CENTOS_SERVER", "ALMALINUX_SERVER", "ROCKY_SERVER")}
        template = load_template(name, recipes, URLMAP | {"DEBIAN_SECURITY_SERVER": "http://s.invalid"} | rpm_servers)
        assert template.repositories and template.packages
    names = os_template_names(recipes)
    assert {"debian-12-x86_64", "debian-12-x86_64-minimal", "debian-13-x86_64"} <= set(names)


def test_an_app_built_as_a_set_is_refused(tmp_path: Path) -> None:
    """Issue 11, point 6: ``<recipe>-<app>`` (``-`` for ``+``) used to build an OS of the
    app's packages alone; it is refused with the name meant. A set named with ``-`` for
    ``+`` gets the same help, and an app name given a set's gets the other way round."""
    make_recipe(tmp_path, nginx_packages="nginx\n", nginx_post__install="#!/bin/sh\n", minimal_packages="@required\n")
    with pytest.raises(EztError) as caught:
        load_template("debian-12-x86_64-nginx", tmp_path, URLMAP)
    assert "nginx is an application: did you mean debian-12-x86_64+nginx?" in caught.value.message
    assert str(caught.value.where).endswith("nginx_packages")
    with pytest.raises(EztError, match=r"did you mean debian-12-x86_64-minimal\+nginx\?"):
        load_template("debian-12-x86_64-minimal-nginx", tmp_path, URLMAP)
    with pytest.raises(EztError, match=r"an OS set, not an application in debian-12-x86_64: did you mean "
                                       r"debian-12-x86_64-minimal\?"):  # fmt: skip
        load_buildable("debian-12-x86_64+minimal", tmp_path, URLMAP)
    with pytest.raises(EztError, match=r"no tiny_packages in the recipe \(sets: debian-12-x86_64-minimal\)"):
        load_template("debian-12-x86_64-tiny", tmp_path, URLMAP)


def test_a_set_without_a_priority_class_is_a_set(tmp_path: Path) -> None:
    """Issue 11, point 6: a set listing packages by name only (no ``@required``) is an OS
    set, told from an app by naming the package manager (apt), as an OS does."""
    make_recipe(tmp_path, tiny_packages="apt  # and what it needs\nsystemd-sysv\n", web_packages="nginx\n",
                pinned_packages="apt=2.6.1\nbash\n", tools_packages="# apt would make it a set\nvim\n")  # fmt: skip
    recipe = read_recipe_dir(tmp_path / "debian-12-x86_64")
    assert recipe.sets() == ["pinned", "tiny"]
    assert recipe.apps() == ["tools", "web"]
    tiny = load_template("debian-12-x86_64-tiny", tmp_path, URLMAP)
    assert [p.name for p in tiny.packages] == ["apt", "systemd-sysv"]
    assert os_template_names(tmp_path) == [f"debian-12-x86_64{s}" for s in ("", "-pinned", "-tiny")]


def test_appcaches_short_and_full_names(tmp_path: Path) -> None:
    """Issue 11, point 6: ``appcaches`` lines are app caches relative to the recipe (``web``,
    ``web+myapp``, ``minimal+web``) or full names; anything else names the file and line."""
    recipe = make_recipe(tmp_path, web_packages="nginx\n", myapp_packages="myapp\n", minimal_packages="@required\n",
                         appcaches="# built by default\nweb\nweb+myapp  # two apps\nminimal+web\n"
                                   "debian-12-x86_64-minimal+myapp+web\ndebian-12-x86_64+myapp\n")  # fmt: skip
    names = default_app_caches(read_recipe_dir(recipe))
    assert names == ["debian-12-x86_64+web", "debian-12-x86_64+web+myapp", "debian-12-x86_64-minimal+web",
                     "debian-12-x86_64-minimal+myapp+web", "debian-12-x86_64+myapp"]  # fmt: skip
    for name in names:
        assert load_buildable(name, tmp_path, URLMAP).name == name


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("web+nope", "'nope' is not an application of debian-12-x86_64 (applications: web)"),
        ("minimal", "'minimal' names no application"),
        ("debian-12-x86_64-web", "'web' is not an OS set of debian-12-x86_64 (sets: minimal)"),
        ("debian-12-x86_64-minimal+minimal", "'minimal' is not an application"),
        ("web mariadb", "one app cache a line"),
        ("web+", "names no application"),
    ],
)
def test_appcaches_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    recipe = make_recipe(tmp_path, web_packages="nginx\n", minimal_packages="@required\n", appcaches=f"web\n{line}\n")
    with pytest.raises(EztError) as caught:
        default_app_caches(read_recipe_dir(recipe))
    assert str(caught.value.where) == f"{recipe}/appcaches:2"
    assert message in caught.value.message


def test_editor_and_patch_leftovers_are_ignored(tmp_path: Path) -> None:
    """Issue 11, point 9: a backup file used to break ``ezt recipes`` for every recipe."""
    recipe = make_recipe(tmp_path, os_post__cache="#!/bin/sh\n")
    first = load_template("debian-12-x86_64", tmp_path, URLMAP).digest()
    for leftover in ("os_post-cache~", ".#os_packages", "#os_packages#", "os_packages.orig", "os_packages.rej",
                     "notes.txt~"):  # fmt: skip
        (recipe / leftover).write_text("junk\n")
    assert load_template("debian-12-x86_64", tmp_path, URLMAP).digest() == first
    listing = run_ezt("recipes", "--json", "--recipes", str(tmp_path), "--cache-dir", str(tmp_path / "cache"))
    assert listing.returncode == 0, listing.stderr
    assert [t["template"] for t in json.loads(listing.stdout)[0]["templates"]] == ["debian-12-x86_64"]
    (recipe / "notes.txt").write_text("not a recipe file\n")
    assert_user_error(run_ezt("recipes", "--recipes", str(tmp_path)), "notes.txt", "unexpected file in recipe")


@pytest.mark.parametrize("kind", ["os_post-install", "os_pre-cache", "web_pre-install", "web_post-install"])
def test_a_crlf_script_is_named(tmp_path: Path, kind: str) -> None:
    """Issue 11, point 9: a script saved with CRLF line ends failed deep in the build
    ("/bin/sh^M: bad interpreter"); it is refused at once, naming the file."""
    make_recipe(tmp_path, web_packages="nginx\n", **{kind.replace("-", "__"): "#!/bin/sh\r\necho hi\r\n"})
    with pytest.raises(EztError) as caught:
        load_buildable("debian-12-x86_64+web", tmp_path, URLMAP)
    assert str(caught.value.where) == f"{tmp_path}/debian-12-x86_64/{kind}:1"
    assert "CRLF" in caught.value.message and "dos2unix" in caught.value.message
    info = run_ezt("info", "debian-12-x86_64+web", "--recipes", str(tmp_path), "--cache-dir", str(tmp_path / "c"),
                   env={"EZT_URLMAP_SEC": URLMAP["SEC"]})  # fmt: skip
    assert_user_error(info, f"{kind}:1: script has CRLF (Windows) line ends")
