"""Checks the GPU payload's wheels without a Python 3.12 to import them in.

    payload_check.py select RESOLVED.txt WHEEL_DIR     -> the wheel path of each pinned package
    payload_check.py check SELECTED.txt DEVICE_PACKAGES.txt LEFT_OUT.txt

`check` fails when a wheel does not fit CPython 3.12 on manylinux x86_64, when two wheels are
the same package, or when a dependency (markers evaluated for Python 3.12.3 on Linux x86_64, no
extras) is neither in the payload, nor on the GPU machine, nor left out on purpose. Version
conflicts with a package the machine has are reported, not fatal: the machine's package wins.
Runs on any Python 3 with pip (it uses pip's vendored `packaging`).
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

try:
    from packaging import requirements, tags, utils, version
except ImportError:  # a bare interpreter: pip's copy
    from pip._vendor.packaging import requirements, tags, utils, version  # type: ignore

TARGET_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "implementation_version": "3.12.3",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "platform_release": "",
    "platform_version": "",
    "extra": "",
}


def _supported() -> set[tags.Tag]:
    platforms = [f"manylinux_2_{n}_x86_64" for n in range(39, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    platforms += ["linux_x86_64"]
    supported = set(tags.cpython_tags((3, 12), platforms=platforms))
    supported |= set(tags.compatible_tags((3, 12), "cp312", platforms))
    return supported


def _pins(resolved: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in resolved.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if "==" in line:
            name, ver = line.split("==", 1)
            out[utils.canonicalize_name(name.split("[")[0])] = ver.split(";")[0].strip()
    return out


def select(resolved: Path, wheel_dir: Path) -> int:
    pins = _pins(resolved)
    found: dict[str, Path] = {}
    for whl in sorted(wheel_dir.glob("*.whl")):
        name, ver, _, _ = utils.parse_wheel_filename(whl.name)
        if pins.get(name) is not None and version.Version(pins[name]) == ver:
            found[name] = whl
    missing = sorted(set(pins) - set(found))
    if missing:
        print("no wheel downloaded for: " + ", ".join(missing), file=sys.stderr)
        return 1
    for name in sorted(found):
        print(found[name])
    return 0


def _device(path: Path) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, ver = line.partition("==")
        out[utils.canonicalize_name(name)] = ver or None
    return out


def _requires(whl: Path) -> list[str]:
    with zipfile.ZipFile(whl) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode("utf-8", "replace")
    head = text.split("\n\n", 1)[0]
    key = "Requires-Dist:"
    return [line[len(key) :].strip() for line in head.splitlines() if line.startswith(key)]


def check(selected: Path, device_file: Path, left_out_file: Path) -> int:
    supported = _supported()
    device = _device(device_file)
    left_out = set(_device(left_out_file))
    payload: dict[str, version.Version] = {}
    errors: list[str] = []
    notes: list[str] = []
    wheels = [Path(p) for p in selected.read_text().split()]
    for whl in wheels:
        name, ver, _, wtags = utils.parse_wheel_filename(whl.name)
        if name in payload:
            errors.append(f"two wheels of {name}")
        payload[name] = ver
        if not set(wtags) & supported:
            errors.append(f"{whl.name} does not fit CPython 3.12 manylinux x86_64")
        if name in device:
            notes.append(f"{name} is on the GPU machine and in the payload (payload wins)")
    for whl in wheels:
        owner = utils.parse_wheel_filename(whl.name)[0]
        for spec in _requires(whl):
            req = requirements.Requirement(spec)
            if req.marker is not None and not req.marker.evaluate(TARGET_ENV):
                continue
            name = utils.canonicalize_name(req.name)
            if name in payload:
                if req.specifier and not req.specifier.contains(payload[name], prereleases=True):
                    notes.append(f"{owner} wants {req}, payload has {payload[name]}")
            elif name in device:
                have = device[name]
                if have and req.specifier and not req.specifier.contains(have, prereleases=True):
                    notes.append(f"{owner} wants {req}, the GPU machine has {have}")
            elif name in left_out:
                notes.append(f"{owner} wants {req}: left out on purpose")
            else:
                errors.append(f"{owner} needs {req}: neither in the payload nor on the GPU machine")
    if not any("does not fit" in e for e in errors):
        print(f"{len(wheels)} wheels, all fit cp312 manylinux x86_64")
    for line in sorted(set(notes)):
        print("note:", line)
    for line in errors:
        print("ERROR:", line)
    return 1 if errors else 0


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] == "select":
        return select(Path(argv[2]), Path(argv[3]))
    if len(argv) == 5 and argv[1] == "check":
        return check(Path(argv[2]), Path(argv[3]), Path(argv[4]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
