//! Fixtures for running containers on berthd: an image with the busybox applets the tests call,
//! its import, and a guard that removes every task, container and supervisor a test made, even
//! when the test fails.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::manager::image::{self, Entry, Image, Layer};
use crate::manager::Berthd;

/// A busybox image whose `/bin` has `echo`, `sleep`, `true`, `false`, `id` and `cat` too.
pub fn run_image(name: &str) -> Result<Image> {
    let mut entries = vec![Entry::Dir("bin", 0o755)];
    for a in [
        "bin/echo",
        "bin/sleep",
        "bin/true",
        "bin/false",
        "bin/id",
        "bin/pwd",
        "bin/env",
    ] {
        entries.push(Entry::Symlink(a, "busybox"));
    }
    Image::new(name, vec![image::base_layer()?, Layer::build(&entries)?])
}

/// Imports (and unpacks) `img` into namespace `ns` with ctr.
pub fn import(d: &Berthd, ns: &str, img: &Image) -> Result<()> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let tar = dir.path().join("image.tar");
    img.write_oci_archive(&tar)?;
    let tar = tar.to_str().context("temp path is not UTF-8")?;
    let out = d.ctr(ns, &["images", "import", tar]);
    anyhow::ensure!(out.code == 0, "ctr images import failed: {}", out.stderr);
    Ok(())
}

/// Removes the tasks and containers of one namespace on drop: through berthd when it answers,
/// then directly (the runtime's delete, the supervisors killed by pid) for anything left.
pub struct Cleanup<'a> {
    d: &'a Berthd,
    ns: String,
}

impl<'a> Cleanup<'a> {
    /// Guards namespace `ns` of `d`.
    pub fn new(d: &'a Berthd, ns: &str) -> Cleanup<'a> {
        Cleanup {
            d,
            ns: ns.to_string(),
        }
    }
}

/// Pids of the berth-shim processes whose bundle lies under `state`.
pub fn supervisors_under(state: &Path) -> Vec<i32> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return v;
    };
    let needle = state.to_string_lossy().into_owned();
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        let mut parts = cmd.split('\0');
        let exe = parts.next().unwrap_or("");
        if exe.ends_with("berth-shim") && parts.next().is_some_and(|b| b.starts_with(&needle)) {
            v.push(pid);
        }
    }
    v
}

/// Task bundle dirs left under berthd's state dir for namespace `ns`.
pub fn bundles(d: &Berthd, ns: &str) -> Vec<PathBuf> {
    std::fs::read_dir(d.state().join("tasks").join(ns))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let ns = self.ns.as_str();
        if ns == "moby" && self.d.docker_socket().exists() {
            // Containers made through the Docker API may have a restart policy: a task killed
            // below would be started again by berthd after the supervisors were counted.
            // `docker rm -f` marks them stopped by hand first.
            let ids = self.d.docker(&["ps", "-aq"]).stdout;
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f", "-v"];
                args.extend(ids);
                let _ = self.d.docker(&args);
            }
        }
        for b in bundles(self.d, ns) {
            let id = b
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = self.d.ctr(ns, &["task", "kill", "-s", "9", &id]);
            let _ = self.d.ctr(ns, &["task", "rm", "-f", &id]);
            // berthd may be down: the runtime's own delete, then the supervisor by pid.
            let _ = std::process::Command::new(crate::bins::berth_runc())
                .arg("--root")
                .arg(self.d.state().join("runtime").join(ns))
                .args(["delete", "--force", &id])
                .output();
        }
        for pid in supervisors_under(&self.d.state().join("tasks").join(ns)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let out = self.d.ctr(ns, &["containers", "ls", "-q"]);
        for id in out.stdout.lines().filter(|l| !l.is_empty()) {
            let _ = self.d.ctr(ns, &["containers", "rm", id]);
        }
        remove_namespace_cgroups(ns);
    }
}

/// Removes the (empty) `/<ns>` cgroup that `berth run`'s cgroupsPath `/<ns>/<id>` made the
/// runtime create on every hierarchy. The runtime removes the container's own cgroup, and a
/// parent only if that container created it and is the last one out, as runc does; a
/// namespace that lives for one test must not leave its parent behind. rmdir only: a cgroup
/// that still has processes or children stays.
pub fn remove_namespace_cgroups(ns: &str) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if !matches!(right.split(' ').next(), Some("cgroup" | "cgroup2")) {
            continue;
        }
        if let Some(mount_point) = left.split(' ').nth(4) {
            let _ = std::fs::remove_dir(Path::new(mount_point).join(ns));
        }
    }
}

/// berthd for one test's namespace: derefs to the [`Berthd`]; on drop (pass or fail) the
/// namespace's tasks, containers, supervisors and cgroups go (the [`Cleanup`] guard) before
/// berthd stops.
pub struct NsDaemon {
    /// The daemon.
    pub d: Berthd,
    /// The test's namespace.
    pub ns: String,
}

impl NsDaemon {
    /// berthd in a network namespace of its own for a Docker API test (namespace `moby`),
    /// with `docker.io/NAME` loaded: busybox with `applets` (`bin/sleep`, ...) and `extra`.
    pub fn docker_with_busybox(
        name: &str,
        applets: &[&'static str],
        extra: Vec<crate::manager::image::Entry>,
    ) -> NsDaemon {
        let d = NsDaemon {
            d: Berthd::start_in_netns(&[]).expect("berthd starts"),
            ns: "moby".to_string(),
        };
        let img =
            crate::manager::image::busybox_applets(&format!("docker.io/{name}"), applets, extra)
                .expect("busybox image");
        d.docker_load(&img);
        d
    }
}

impl std::ops::Deref for NsDaemon {
    type Target = Berthd;
    fn deref(&self) -> &Berthd {
        &self.d
    }
}

impl Drop for NsDaemon {
    fn drop(&mut self) {
        drop(Cleanup::new(&self.d, &self.ns));
    }
}
