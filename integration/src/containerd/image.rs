//! The image the containerd tests run: busybox-static with links for the applets they call,
//! written as an OCI archive by the manager's image builder and imported with `ctr images import`.

use std::path::Path;

use anyhow::{Context, Result};

use crate::manager::image::{Entry, Image, Layer, BUSYBOX};

/// The image's name as `ctr images import` registers it.
pub const IMAGE: &str = "docker.io/berth/ctrd-busybox:latest";

/// Applets reachable on `$PATH` (`/bin`) inside the image.
pub const APPLETS: &[(&str, &str)] = &[
    ("bin/sh", "busybox"),
    ("bin/echo", "busybox"),
    ("bin/sleep", "busybox"),
    ("bin/cat", "busybox"),
    ("bin/tty", "busybox"),
    ("bin/test", "busybox"),
    ("bin/ls", "busybox"),
    ("bin/id", "busybox"),
    ("bin/touch", "busybox"),
    ("bin/mkdir", "busybox"),
    ("bin/grep", "busybox"),
    ("bin/head", "busybox"),
    ("bin/readlink", "busybox"),
    ("bin/stat", "busybox"),
];

/// Builds the one-layer image: /bin/busybox, the applet links, /etc/passwd and /etc/group, /tmp.
pub fn busybox_image() -> Result<Image> {
    let busybox = std::fs::read(BUSYBOX).with_context(|| {
        format!("reading {BUSYBOX} (install busybox-static: hack/setup.sh does)")
    })?;
    let mut entries = vec![
        Entry::Dir("bin", 0o755),
        Entry::File("bin/busybox", 0o755, busybox),
    ];
    entries.extend(APPLETS.iter().map(|(l, t)| Entry::Symlink(l, t)));
    entries.extend([
        Entry::Dir("etc", 0o755),
        Entry::File(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
        ),
        Entry::File("etc/group", 0o644, b"root:x:0:\n".to_vec()),
        Entry::Dir("root", 0o700),
        Entry::Dir("tmp", 0o1777),
    ]);
    Image::new(IMAGE, vec![Layer::build(&entries)?])
}

/// Writes the image as an OCI archive at `path`.
pub fn write_archive(path: &Path) -> Result<()> {
    busybox_image()?
        .write_oci_archive(path)
        .with_context(|| format!("writing the image archive {}", path.display()))
}
