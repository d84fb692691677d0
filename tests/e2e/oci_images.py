#!/usr/bin/env python3
"""Builds the OCI image layouts the end-to-end tests push to a local registry.

Layers are written by hand (Python's tarfile) so that the tests control
every entry: whiteouts, opaque directories and hostile paths exactly as a
registry could serve them.

  oci_images.py LAYOUT ROOTFS     writes tags busybox, busybox-plain, whiteout, multi,
                                  evil-traversal, evil-symlink, evil-hardlink
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"


class Layout:
    def __init__(self, path):
        self.path = path
        self.tags = []
        os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)

    def blob(self, data, media_type):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.path, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": "sha256:" + digest, "size": len(data)}

    def image(self, layers, config, arch="amd64"):
        """layers: list of uncompressed tar bytes. Returns the manifest descriptor."""
        descriptors, diff_ids = [], []
        for tar_bytes in layers:
            diff_ids.append("sha256:" + hashlib.sha256(tar_bytes).hexdigest())
            descriptors.append(self.blob(gzip.compress(tar_bytes, mtime=0), MEDIA_LAYER))
        config_json = {"architecture": arch, "os": "linux", "config": config,
                       "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        config_desc = self.blob(json.dumps(config_json).encode(), MEDIA_CONFIG)
        manifest = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "config": config_desc, "layers": descriptors}
        desc = self.blob(json.dumps(manifest).encode(), MEDIA_MANIFEST)
        desc["platform"] = {"architecture": arch, "os": "linux"}
        return desc

    def tag(self, name, descriptor):
        entry = dict(descriptor)
        entry["annotations"] = {"org.opencontainers.image.ref.name": name}
        self.tags.append(entry)

    def write_index(self):
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": self.tags}, f)


def tar_of(build):
    """build(tar) adds entries; returns the uncompressed tar bytes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        build(tar)
    return out.getvalue()


def add_file(tar, name, data=b"", mode=0o644):
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def add_dir(tar, name, mode=0o755):
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def add_link(tar, name, target, hard=False):
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    tar.addfile(info)


def rootfs_layer(rootfs, extra=None):
    def build(tar):
        for entry in sorted(os.listdir(rootfs)):
            tar.add(os.path.join(rootfs, entry), arcname=entry)
        if extra:
            extra(tar)
    return tar_of(build)


def main():
    layout_dir, rootfs = sys.argv[1], sys.argv[2]
    layout = Layout(layout_dir)
    base = rootfs_layer(rootfs)
    busybox_config = {
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo \"hello from $GREETING in $(pwd) as $(id -un)\""],
        "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=image"],
        "WorkingDir": "/srv",
        "User": "app",
        "ExposedPorts": {"80/tcp": {}},
    }
    busybox = layout.image([base], busybox_config)
    layout.tag("busybox", busybox)
    # Like Docker Hub's busybox: no entrypoint, Cmd sh, port 80 exposed.
    layout.tag("busybox-plain", layout.image([base], {"Cmd": ["sh"], "ExposedPorts": {"80/tcp": {}}}))

    # Two layers: the upper one deletes a file and makes a directory opaque.
    def lower_extra(tar):
        add_file(tar, "etc/deleted-me", b"gone\n")
        add_dir(tar, "opt/opaque")
        add_file(tar, "opt/opaque/old-a", b"a\n")
        add_file(tar, "opt/opaque/old-b", b"b\n")
        add_file(tar, "etc/replaced", b"old\n")

    def upper(tar):
        add_file(tar, "etc/.wh.deleted-me")
        add_dir(tar, "opt/opaque")
        add_file(tar, "opt/opaque/.wh..wh..opq")
        add_file(tar, "opt/opaque/new-c", b"c\n")
        add_file(tar, "etc/replaced", b"new\n")

    whiteout_config = {"Cmd": ["/bin/sh", "-c",
                               "ls /etc/deleted-me 2>&1; ls /opt/opaque; cat /etc/replaced"]}
    layout.tag("whiteout", layout.image([rootfs_layer(rootfs, lower_extra), tar_of(upper)], whiteout_config))

    # A multi-arch index: linux/amd64 runs, linux/arm64 must never be chosen here.
    arm = layout.image([tar_of(lambda tar: add_file(tar, "arm-only", b"arm\n"))],
                       {"Cmd": ["/arm-only"]}, arch="arm64")
    amd = dict(busybox)
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [arm, amd]}
    layout.tag("multi", layout.blob(json.dumps(index).encode(), MEDIA_INDEX))

    # Hostile upper layers: each must be refused without writing outside.
    evil = {
        "evil-traversal": lambda tar: add_file(tar, "../../../tmp/microvm-evil-traversal", b"pwned\n"),
        "evil-symlink": lambda tar: (add_link(tar, "escape", "/tmp"),
                                     add_file(tar, "escape/microvm-evil-symlink", b"pwned\n")),
        "evil-hardlink": lambda tar: add_link(tar, "stolen", "../../../etc/hostname", hard=True),
    }
    for name, build in evil.items():
        layout.tag(name, layout.image([base, tar_of(build)], {"Cmd": ["/bin/true"]}))
    layout.write_index()


if __name__ == "__main__":
    main()
