"""Generates the gRPC stubs from proto/ on every build of the package (editable or not).

They are generated before setup() so that package discovery finds `editcache.v1`.
"""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent


def generate_stubs() -> None:
    from grpc_tools import protoc  # a build requirement (pyproject.toml)

    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{ROOT / 'proto'}", f"-I{include}", f"--python_out={ROOT}",
            f"--pyi_out={ROOT}", f"--grpc_python_out={ROOT}", *protos]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {protos}")
    for proto in protos:  # make every generated folder a package
        for package in Path(proto).parents:
            if package != Path("."):
                (ROOT / package / "__init__.py").touch()


generate_stubs()
setup()
